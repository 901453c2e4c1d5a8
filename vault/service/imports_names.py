"""``secret import --fix-names``: names another password manager gave, made into ones a secret takes.

A Bitwarden item's title ("Acme VPN", "Xero (accounts)") or a custom field's name ("API key") is
often not a name ``secrets.add`` takes (``validation.SECRET_NAME``, ``FIELD_NAME``). ``fix_names``
changes only those, names each change, and merges nothing: two titles made the same are then a name
given twice (``imports.check`` refuses it), and a field whose fixed name another field of the same
secret has keeps its own (refused there too).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

from vault.service import validation
from vault.service.imports import FIELD_KINDS, Parsed


def fix_names(parsed: Parsed) -> Parsed:
    """``parsed`` with each secret or custom field name ``secrets.add`` refuses made into one it takes
    (``--fix-names``: a Bitwarden item's title such as "Acme VPN" becomes ``Acme-VPN``; accents dropped,
    every run of other characters one '-', cut to the rule's length), each change named in ``renamed``.
    A name nothing is left of stays as it is (``check`` names it); two names made the same are a name
    given twice, as in the file."""
    rows, renamed = [], []
    for row in parsed.rows:
        name = row.name
        if name and not validation.SECRET_NAME.fullmatch(name):
            name = _fixed(name, "", 128) or name
            if name != row.name:
                renamed.append(f"{row.where.split(' (')[0]}: named {name}")
        fields: dict[str, dict[str, str]] = {}
        taken = {key for kind in FIELD_KINDS for key in getattr(row, kind)}
        for kind in FIELD_KINDS:
            fields[kind] = {}
            for key, value in getattr(row, kind).items():
                fixed = key if validation.FIELD_NAME.fullmatch(key) else _fixed(key, "f-", 32)
                if fixed and fixed != key and fixed not in taken:  # else left as it is: ``check`` names it
                    renamed.append(f"{row.where.split(' (')[0]}: field {validation.shown(key)} named {fixed}")
                    taken.add(fixed)
                    key = fixed
                fields[kind][key] = value
        plain, sensitive, public = (fields[kind] for kind in FIELD_KINDS)
        rows.append(dataclasses.replace(row, name=name, fields=plain, sensitive_fields=sensitive, public_fields=public))
    return dataclasses.replace(parsed, rows=tuple(rows), renamed=tuple(renamed))


def _fixed(name: str, lead: str, most: int) -> str:
    """``name`` in ASCII letters, digits and ``-`` (secret names keep '.', '_', '@', '+'), starting with a
    letter or digit (``lead`` first when a field's starts with a digit), at most ``most`` characters."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    allowed = r"[^A-Za-z0-9_-]+" if lead else r"[^A-Za-z0-9._@+-]+"
    text = re.sub(allowed, "-", text).strip("-._@+")
    if lead and text[:1].isdigit():
        text = lead + text
    return text[:most].rstrip("-._@+")
