"""The package's structure rules, enforced (issue 12).

* No module reads another module's ``_private`` names, and no code reads another object's
  ``_attributes``: only ``self._x`` / ``cls._x`` (and ``_sunder_`` / ``__dunder__`` names, which
  are Python's protocols, not privates). Importing a private *module* is fine; what it exports
  without an underscore is its interface.
* No function in ``cache_core/`` is longer than 60 lines and no module longer than 450, unless
  a comment says why: ``# long-function: <why>`` right above the ``def`` (or its decorators),
  ``# long-module: <why>`` anywhere in the module.
* The typed layers (``_typed``, ``_read_through``, ``_protected``, ``_memoize``) import no
  concrete byte cache: they meet byte caches through ``_protocols``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cache_core

PACKAGE = Path(cache_core.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION = 60
MAX_MODULE = 450


def _is_private(name: str) -> bool:
    if name.startswith("__") and name.endswith("__"):
        return False  # dunder: a protocol
    if name.startswith("_") and name.endswith("_") and len(name) > 2:
        return False  # sunder: enum's _name_ / _value_, ...
    return name.startswith("_")


def private_reads(source: str) -> list[str]:
    """Every read of another module's private name or another object's private attribute."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                if _is_private(alias.name) and not _is_submodule(node.level, module, alias.name):
                    found.append(f"line {node.lineno}: from {module} import {alias.name}")
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def _is_submodule(level: int, module: str, name: str) -> bool:
    """``from . import _plain``: a private module (a package's own private names are never
    imported: ``__init__`` defines none), not a private name."""
    if level == 0:
        return False
    if not module:
        return True
    base = PACKAGE.joinpath(*module.split("."))
    return (base / f"{name}.py").exists() or (base / name).is_dir()


def long_things(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    found: list[str] = []
    if len(lines) > MAX_MODULE and not any(
        line.lstrip().startswith("# long-module:") for line in lines
    ):
        found.append(f"module: {len(lines)} lines")
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length <= MAX_FUNCTION:
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        above = lines[first - 2].strip() if first >= 2 else ""
        if not above.startswith("# long-function:"):
            found.append(f"{node.name} (line {node.lineno}): {length} lines")
    return found


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_no_private_reads(path: Path) -> None:
    found = private_reads(path.read_text())
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_no_long_functions_or_modules(path: Path) -> None:
    found = long_things(path)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("name", ["_typed", "_read_through", "_protected", "_memoize"])
def test_typed_layers_import_no_concrete_byte_cache(name: str) -> None:
    path = PACKAGE / f"{name}.py"
    if not path.exists():
        pytest.skip(f"{name} does not exist")
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            imported.add(node.module or "")
    assert not imported & {"_redis", "_memory", "_multilevel"}, imported


def test_the_checks_catch_what_they_forbid() -> None:
    bad = (
        "from ._typed import _Options\n"
        "from . import _plain\n"
        "from .contrib import _store\n"
        "def f(cache):\n"
        "    self._ok, cls._ok, value._name_, value.__dict__\n"
        "    return cache._prefix\n"
    )
    assert private_reads(bad) == [
        "line 1: from _typed import _Options",
        "line 6: cache._prefix",
    ]
