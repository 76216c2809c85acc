"""The dependency list is honest: every declared runtime dependency is imported by ``gateway/`` or
``upstream_mcp/``, and every third-party module they import is declared (not borrowed from another package's
dependencies). The one exception is listed, with its reason, in ``NOT_YET_IMPORTED``."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "upstream_mcp")

NOT_YET_IMPORTED: set[str] = set()
"""Dependencies declared ahead of the code that imports them, each with its reason (none today: authlib, declared
for wave 2, is imported by the identity providers' client)."""


def _normalized(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normalized(re.split(r"[ <>=!~;\[]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}


def imported_modules() -> set[str]:
    """The top-level modules every ``.py`` file of the packages imports (absolute imports only)."""
    modules: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return modules


def imported_distributions() -> dict[str, set[str]]:
    """Third-party distributions (normalized) imported by the packages, with the module names that import them."""
    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for module in imported_modules() - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"}:
        for distribution in owners.get(module, [module]):
            found.setdefault(_normalized(distribution), set()).add(module)
    return found


def test_every_declared_runtime_dependency_is_imported_or_explicitly_awaited():
    unused = declared() - set(imported_distributions()) - NOT_YET_IMPORTED
    assert not unused, f"declared in pyproject.toml but never imported by {PACKAGES}: {sorted(unused)}"


def test_the_awaited_dependencies_are_still_declared_and_not_yet_imported():
    """Once wave 2 imports one, it leaves the list (and a dependency dropped from pyproject leaves it too)."""
    assert declared() >= NOT_YET_IMPORTED
    assert not NOT_YET_IMPORTED & set(imported_distributions())


def test_every_third_party_module_imported_is_a_declared_dependency():
    undeclared = {d: m for d, m in imported_distributions().items() if d not in declared()}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
