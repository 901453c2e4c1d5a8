"""Make a server key file and certify its signing key: the steps `credvault serve` needs
before it runs, while there is no command for them (docs/deployment.md §3).

    python server_key.py new FILE
        Write FILE (created 0600, never overwritten): server signing key version 1 and
        server master key version 1, both fresh random 32 bytes. Prints the signing key's
        public half (base64url), which is not a secret.

    python server_key.py certify --db URL --admin NAME --passphrase-file PASS PUBLIC
        As admin NAME (unlocked with the passphrase in PASS), certify PUBLIC as server
        signing key version 1 under the organisation key: one `server-key-certify` event.

    python server_key.py rotate-master FILE
        Add master key version N+1 to FILE and keep version N under
        "previous_master_keys"; the next `credvault serve` start moves every server client
        key to N+1. Remove the old entry by hand afterwards (docs/deployment.md §8).

It uses the same library calls as the test suite (tests/server/serve_process.py). Run it
with the Python of the environment credvault is installed in.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
from pathlib import Path

from vault import Vault
from vault.crypto.serverkey import ServerSigningKey
from vault.server.keyfile import read_server_keys
from vault.service.serverkeys import certify_server_key


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def write_new(path: Path, document: dict[str, object]) -> None:
    """Write ``document`` to a new file only its owner may read (O_EXCL: never over another)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        sys.exit(f"{path} exists: a server key file is never overwritten (move it away first)")
    with os.fdopen(fd, "w") as out:
        json.dump(document, out)


def new(path: Path) -> None:
    key = ServerSigningKey.generate(1)
    write_new(
        path,
        {
            "version": 1,
            "signing_seed": b64url(key.key.seed),
            "master_version": 1,
            "master_key": b64url(secrets.token_bytes(32)),
        },
    )
    read_server_keys(path)  # the file reads back as credvault serve will read it
    print(f"wrote {path} (0600): signing key version 1, master key version 1")
    print(f"signing public key: {b64url(key.public)}")


def certify(db: str, admin: str, passphrase_file: Path, public: str) -> None:
    passphrase = passphrase_file.read_text().rstrip("\n")
    vault = Vault.open(db, engineer=admin)
    try:
        vault.engineers.unlock(admin, passphrase)
        row = certify_server_key(vault, 1, unb64url(public))
    finally:
        vault.store.close()
    print(f"certified server key version {row.version} at {row.certified_at} (by {admin})")


def rotate_master(path: Path) -> None:
    read_server_keys(path)  # refuses a file others may read, or one that is not a server key
    document = json.loads(path.read_text())
    current = int(document["master_version"])
    previous = dict(document.get("previous_master_keys", {}))
    previous[str(current)] = document["master_key"]
    document |= {
        "master_version": current + 1,
        "master_key": b64url(secrets.token_bytes(32)),
        "previous_master_keys": previous,
    }
    staged = path.with_name(path.name + ".new")
    write_new(staged, document)
    read_server_keys(staged)
    os.replace(staged, path)
    print(f"{path}: master key version {current + 1}; version {current} kept as previous")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("new").add_argument("file", type=Path)
    sign = commands.add_parser("certify")
    sign.add_argument("--db", required=True)
    sign.add_argument("--admin", required=True)
    sign.add_argument("--passphrase-file", type=Path, required=True)
    sign.add_argument("public")
    commands.add_parser("rotate-master").add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.command == "new":
        new(args.file)
    elif args.command == "certify":
        certify(args.db, args.admin, args.passphrase_file, args.public)
    else:
        rotate_master(args.file)


if __name__ == "__main__":
    main(sys.argv[1:])
