"""Layers point one way: ``vault/authority`` and ``vault/keyholder`` sit below ``vault/service``.

Every module of the two halves is parsed (not imported: an import under ``TYPE_CHECKING``
or inside a function counts as well) and each import of ``vault.service`` is reported.
The authority imports none. The keyholder still has the modules listed in
``KEYHOLDER_NOT_MOVED_YET`` (the session and its keyring, the audit verifier and a few
constants through ``vault.service.core``): the list may only shrink (issue 13).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vault.authority
import vault.keyholder

AUTHORITY = Path(vault.authority.__file__).parent
KEYHOLDER = Path(vault.keyholder.__file__).parent
# module -> the vault.service modules it still imports (each is a debt of issue 13)
KEYHOLDER_NOT_MOVED_YET = {
    "checkins.py": {"vault.service.sessions"},
    "checkouts.py": {"vault.service.sessions"},
    "secrets.py": {"vault.service.sessions"},
    "sessionkeys.py": {"vault.service.sessions"},
    "keys.py": {"vault.service.core", "vault.service.rows", "vault.service.sessions"},
    "signers.py": {"vault.service.audit", "vault.service.core", "vault.service.validation"},
    "trust.py": {"vault.service.core", "vault.service.rows", "vault.service.sessions"},
    "auditkeys.py": {"vault.service.rows"},
}


def service_imports(source: str) -> set[str]:
    """The ``vault.service`` modules that ``source`` imports, however it imports them."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == "vault.service" or a.name.startswith("vault.service.")}
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module == "vault.service" or node.module.startswith("vault.service."):
                found.add(node.module)
            elif node.module == "vault":
                found |= {"vault.service" for a in node.names if a.name in ("service", "*")}
    return found


@pytest.mark.parametrize("module", sorted(AUTHORITY.rglob("*.py")), ids=lambda p: p.name)
def test_no_authority_module_imports_the_service(module: Path) -> None:
    assert service_imports(module.read_text(encoding="utf-8")) == set()


@pytest.mark.parametrize("module", sorted(KEYHOLDER.rglob("*.py")), ids=lambda p: p.name)
def test_the_keyholder_imports_the_service_only_where_not_moved_yet(module: Path) -> None:
    found = service_imports(module.read_text(encoding="utf-8"))
    assert found <= KEYHOLDER_NOT_MOVED_YET.get(module.name, set()), found


def test_the_list_of_keyholder_debts_is_exact() -> None:
    """A module that no longer imports what it is listed for must leave the list (it only shrinks)."""
    for name, listed in KEYHOLDER_NOT_MOVED_YET.items():
        assert service_imports((KEYHOLDER / name).read_text(encoding="utf-8")) == listed, name


@pytest.mark.parametrize(
    "source",
    [
        "from vault.service import rows",
        "from vault.service.rows import HoldRow",
        "import vault.service.core",
        "from vault import service",
        "if TYPE_CHECKING:\n    from vault.service.core import Core\n",
        "def f():\n    import vault.service\n",
    ],
)
def test_the_check_catches_each_way_of_importing_the_service(source: str) -> None:
    assert service_imports(source), source


@pytest.mark.parametrize(
    "source",
    ["from vault.storage import rows", "from vault.storage.rows import HoldRow", "from vault import validation"],
)
def test_the_check_lets_lower_layers_through(source: str) -> None:
    assert service_imports(source) == set()
