"""The detached clipboard clearer started by ``copy_with_clear`` (see cli/clipboard.py).

    python -m vault.cli.clipclear SECONDS   < "KEY_HEX DIGEST_HEX"

It reads the key and the value's MAC (keyed BLAKE2b) from stdin, sleeps, and clears the clipboard
only if it still holds that value. It imports nothing of the vault but the clipboard.
"""

from __future__ import annotations

import sys
import time

from .clipboard import clear_if_ours, find


def main(argv: list[str]) -> int:
    try:
        seconds = max(0, min(int(argv[1]), 3600))
        key_hex, digest = sys.stdin.readline().split()
        key = bytes.fromhex(key_hex)
    except (IndexError, ValueError):
        return 2
    board = find()
    if board is None:
        return 1
    time.sleep(seconds)
    return 0 if clear_if_ours(board, key, digest) else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv))
