"""credvault: a credential vault for managed service providers.

The public API is ``vault.Vault`` (see ``vault.service.vault``) and the errors in
``vault.errors``. Imports are lazy so that the command-line tool starts quickly.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
__version__ = "0.1.0"
__all__ = ["Vault", "__version__"]

if TYPE_CHECKING:
    from vault.service.vault import Vault


def __getattr__(name: str) -> object:
    if name == "Vault":
        from vault.service.vault import Vault

        return Vault
    raise AttributeError(name)
