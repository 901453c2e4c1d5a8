"""The backup file moved to ``vault/keyholder/backupfile.py`` (the keyholder writes and reads
it); the old name re-exports it, as ``service/rows.py`` does for the storage rows."""

from vault.keyholder.backupfile import (
    FORMAT,
    KEYS_MAGIC,
    MAGIC,
    READABLE_FORMATS,
    BackupReader,
    BackupWriter,
    decode,
    encode,
    load_json,
    private_file,
    write_private,
)

__all__ = [
    "FORMAT",
    "KEYS_MAGIC",
    "MAGIC",
    "READABLE_FORMATS",
    "BackupReader",
    "BackupWriter",
    "decode",
    "encode",
    "load_json",
    "private_file",
    "write_private",
]
