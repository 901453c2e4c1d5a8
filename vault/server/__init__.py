"""The team server (docs/server.md): the authorities behind HTTPS, for keyholders that sign requests.

``build_app`` (``app.py``) makes the ASGI app; ``run`` (``running.py``) serves it with uvicorn
(``credvault serve``). A layer above the authority, beside the transport: it calls authority
functions and never imports a keyholder or a recipe that unwraps (``tests/authority/test_imports.py``).
"""

from __future__ import annotations

TYPE_CHECKING = False
__all__ = ["ServeOptions", "build_app", "run"]

if TYPE_CHECKING:
    from vault.server.app import build_app
    from vault.server.running import ServeOptions, run


def __getattr__(name: str) -> object:
    if name == "build_app":
        from vault.server.app import build_app

        return build_app
    if name in ("ServeOptions", "run"):
        from vault.server import running

        return getattr(running, name)
    raise AttributeError(name)
