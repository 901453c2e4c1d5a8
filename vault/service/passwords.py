"""Generating passwords for `--generate`: uniform choices from the OS CSPRNG."""

from __future__ import annotations

import secrets
import string

from vault.errors import InvalidInput

SYMBOLS = "!#%+-.:=?@_~"
ALPHABET = string.ascii_letters + string.digits + SYMBOLS
MIN_LENGTH, MAX_LENGTH, DEFAULT_LENGTH = 12, 256, 24


def generate_password(length: int = DEFAULT_LENGTH) -> str:
    """A random password with at least one lowercase, uppercase, digit and symbol.

    Rejection sampling keeps every character uniform over ALPHABET; the class rule is
    met by redrawing the whole password, which does not bias individual positions.
    """
    if isinstance(length, bool) or not isinstance(length, int) or not MIN_LENGTH <= length <= MAX_LENGTH:
        raise InvalidInput("bad password length", hint=f"use {MIN_LENGTH} to {MAX_LENGTH}")
    while True:
        candidate = "".join(secrets.choice(ALPHABET) for _ in range(length))
        if (
            any(c.islower() for c in candidate)
            and any(c.isupper() for c in candidate)
            and any(c.isdigit() for c in candidate)
            and any(c in SYMBOLS for c in candidate)
        ):
            return candidate
