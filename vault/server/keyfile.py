"""The server key file: ``credvault serve --server-key FILE`` (docs/server.md §5, §6).

A JSON document ``{"version": N, "signing_seed": "<32 bytes, base64url without padding>"}``:
the server signing key that signs format-3 events, of the version an admin certified
(``server_keys``). It is a secret of the server machine, never of the database, so the file
is refused (``ConfigurationError`` with a hint) unless only its owner may read or write it
(mode 0600), and whatever is wrong with it is named without its contents. The server master
key of the server layer joins it in step 5.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from pathlib import Path

from vault.crypto.serverkey import ServerSigningKey
from vault.crypto.signing import SigningKey
from vault.errors import ConfigurationError

FIELDS = {"version", "signing_seed"}
MAX_FILE = 4096
HINT = 'write {"version": N, "signing_seed": "<base64url>"} to the file and `chmod 600` it'


def read_server_key(path: str | os.PathLike[str]) -> ServerSigningKey:
    """The signing key in the server key file at ``path`` (module docstring)."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
        if not stat.S_ISREG(mode):
            raise ConfigurationError(f"the server key file {file} is not a file", hint=HINT)
        if stat.S_IMODE(mode) & 0o077:
            raise ConfigurationError(
                f"the server key file {file} may be read by others (mode {stat.S_IMODE(mode):04o})",
                hint=f"chmod 600 {file}",
            )
        raw = file.read_bytes()[: MAX_FILE + 1]
    except OSError as error:
        raise ConfigurationError(f"the server key file {file} cannot be read ({error.strerror})", hint=HINT) from None
    return _parsed(raw, file)


def _parsed(raw: bytes, file: Path) -> ServerSigningKey:
    bad = ConfigurationError(f"the server key file {file} is not a server key", hint=HINT)
    if len(raw) > MAX_FILE:
        raise bad
    try:
        document = json.loads(raw)
    except ValueError:
        raise bad from None
    if not isinstance(document, dict) or set(document) != FIELDS:
        raise bad
    version, text = document["version"], document["signing_seed"]
    if isinstance(version, bool) or not isinstance(version, int) or not isinstance(text, str):
        raise bad
    if not 1 <= version < 2**31:
        raise bad
    try:
        seed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise bad from None
    if len(seed) != 32 or base64.urlsafe_b64encode(seed).rstrip(b"=").decode("ascii") != text:
        raise bad
    return ServerSigningKey(version, SigningKey(seed))
