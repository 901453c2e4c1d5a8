"""Rotate the server master key in a server key file: the step docs/deployment.md §8 needs
while `credvault serve rotate-key` does not exist.

    python server_key.py rotate-master FILE

Adds master key version N+1 (fresh random 32 bytes) to FILE and keeps version N under
"previous_master_keys"; the signing key is left as it is. The next start of
`credvault serve` moves every server client key to version N+1 (`ServerLayer.rewrap`).
Remove the old entry by hand once no server client key is under it (docs/deployment.md §8).

The file is re-read as `credvault serve` reads it before and after (a file others may read,
or one that is not a server key, is refused), and replaced atomically: the new version is
written beside it (created 0600, never over another file) and renamed over it. Run it with
the Python of the environment credvault is installed in. `credvault server keygen` makes
the file in the first place and `credvault server certify` certifies its signing key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from pathlib import Path

from vault.server.keyfile import read_server_keys


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def write_new(path: Path, document: dict[str, object]) -> None:
    """Write ``document`` to a new file only its owner may read (O_EXCL: never over another)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        sys.exit(f"{path} exists: remove it (a rotation that stopped half-way) and run again")
    with os.fdopen(fd, "w") as out:
        json.dump(document, out, indent=2)
        out.flush()
        os.fsync(out.fileno())


def rotate_master(path: Path) -> None:
    read_server_keys(path)  # refuses a file others may read, or one that is not a server key
    document = json.loads(path.read_text())
    if "master_key" not in document:
        sys.exit(f"{path} holds no master key: nothing to rotate")
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
    if len(argv) != 2 or argv[0] != "rotate-master":
        sys.exit(__doc__)
    rotate_master(Path(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
