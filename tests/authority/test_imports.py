"""No module of the authority imports a recipe that unwraps, decrypts or unseals.

Every module under vault/authority is parsed (not imported: a star import or an import
inside a function counts as well) and each import is checked against the recipes that
turn ciphertext into plaintext or a sealed key into a key.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vault.authority

AUTHORITY = Path(vault.authority.__file__).parent
# module -> names it must not give the authority ("*" : the module itself is refused)
FORBIDDEN = {
    "vault.crypto.blobs": lambda name: name in ("*", "SecretOpener") or name.startswith(("decrypt_", "unwrap_")),
    "vault.crypto.sealing": lambda name: name in ("*", "open_sealed"),
    "vault.crypto.keyrecord": lambda name: name in ("*", "unlock"),
    "vault.crypto._primitives": lambda name: True,
}


def _modules() -> list[Path]:
    return sorted(AUTHORITY.rglob("*.py"))


def forbidden_imports(source: str) -> list[str]:
    """Each import in ``source`` that gives access to an unwrap/decrypt/unseal recipe."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                for module in FORBIDDEN:
                    if alias.name == module or alias.name.startswith(module + "."):
                        found.append(f"import {alias.name}")  # the whole module, recipes included
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module in FORBIDDEN:
                found += [f"from {node.module} import {a.name}" for a in node.names if FORBIDDEN[node.module](a.name)]
            elif node.module == "vault.crypto":
                parts = {"blobs", "sealing", "keyrecord", "_primitives"}
                found += [f"from vault.crypto import {a.name}" for a in node.names if a.name in parts | {"*"}]
    return found


def test_the_authority_has_modules_to_check() -> None:
    names = {p.name for p in _modules()}
    assert {"__init__.py", "checkouts.py", "requests.py"} <= names


@pytest.mark.parametrize("module", _modules(), ids=lambda p: str(p.relative_to(AUTHORITY)))
def test_no_authority_module_imports_a_decryption_recipe(module: Path) -> None:
    assert forbidden_imports(module.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "from vault.crypto.blobs import decrypt_secret_field",
        "from vault.crypto.blobs import unwrap_data_key as unwrap",
        "from vault.crypto.blobs import SecretOpener",
        "from vault.crypto.blobs import *",
        "from vault.crypto.sealing import open_sealed",
        "from vault.crypto.keyrecord import unlock",
        "from vault.crypto import blobs",
        "from vault.crypto import *",
        "import vault.crypto.sealing",
        "import vault.crypto.blobs as b",
        "def f():\n    from vault.crypto.sealing import open_sealed\n",
    ],
)
def test_the_check_catches_each_way_of_importing_a_recipe(source: str) -> None:
    assert forbidden_imports(source), source


@pytest.mark.parametrize(
    "source",
    ["from vault.crypto import chain, signing", "from vault.crypto.blobs import blob_key_version", "import json"],
)
def test_the_check_lets_public_key_and_hash_code_through(source: str) -> None:
    assert forbidden_imports(source) == []


# -- the team server (vault/server/): no recipe either, and no keyholder or service --------------------

SERVER = Path(vault.authority.__file__).parent.parent / "server"
ABOVE_THE_SERVER = ("vault.keyholder", "vault.service", "vault.transport", "vault.cli")


def server_layer_imports(source: str) -> list[str]:
    """Each import in ``source`` of a keyholder, the service, a transport or the CLI (the server
    calls the authority; the keyholder's hands never run in it)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "vault"]
        found += [name for name in names if name.startswith(ABOVE_THE_SERVER)]
    return found


def _server_modules() -> list[Path]:
    return sorted(SERVER.rglob("*.py"))


def test_the_server_has_modules_to_check() -> None:
    assert {"__init__.py", "app.py", "authentication.py"} <= {p.name for p in _server_modules()}


@pytest.mark.parametrize("module", _server_modules(), ids=lambda p: p.name)
def test_no_server_module_imports_a_decryption_recipe(module: Path) -> None:
    assert forbidden_imports(module.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("module", _server_modules(), ids=lambda p: p.name)
def test_no_server_module_imports_a_keyholder_or_the_service(module: Path) -> None:
    assert server_layer_imports(module.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "from vault.keyholder.trust import Trust",
        "import vault.keyholder.keys",
        "from vault import keyholder",
        "from vault.service.sessions import UnlockedSession",
        "from vault.transport.https import HttpsTransport",
        "def f():\n    from vault.keyholder import responses\n",
    ],
)
def test_the_server_check_catches_each_way_of_importing_a_keyholder(source: str) -> None:
    assert server_layer_imports(source), source
