"""The audit chain's checks, as the service's callers import them (``keyholder/auditchain.py``).

The checks are the keyholder's (``keyholder/auditchain.py``: hashes, links, signatures
within their keys' lifetimes, formats and times; ``check_range`` on a DB-API cursor for a
few events in the caller's unit). ``audit verify`` and ``report at-risk`` hand them the rows
the audit authority streams (``keyholder/auditverify.py``). The names the grant ledger and
the root rotation import stay here.
"""

from __future__ import annotations

from vault.keyholder.auditchain import NEVER, TABLE_COLUMNS, Keys, Problems, RangeResult, check_range, check_rows

__all__ = ["NEVER", "Keys", "Problems", "RangeResult", "check_range"]

_COLUMNS = TABLE_COLUMNS  # the grant ledger reads one event's fields in this order
_check = check_rows  # and checks it with this
