"""Source-level guarantees: public JAX APIs only, and no `assert` for validation.

`assert` vanishes under `python -O`, so a user's bad input would pass silently; JAX internals
(`jax._src`) change with every release, which is what breaks the published ADEV implementation.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = [p for folder in ("genvi", "estimators", "objectives", "models") for p in sorted((ROOT / folder).rglob("*.py"))]


def _tree(path: pathlib.Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_the_library_is_found():
    assert len(LIBRARY) > 30


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_jax_internals(path):
    for node in ast.walk(_tree(path)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        bad = [n for n in names if n == "jax._src" or n.startswith("jax._src.") or n.startswith("jaxlib")]
        assert not bad, f"{path.relative_to(ROOT)}:{node.lineno} imports {bad}"
    assert "jax._src" not in path.read_text(), f"{path.relative_to(ROOT)} mentions jax._src"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_assert_statements_in_the_library(path):
    lines = [node.lineno for node in ast.walk(_tree(path)) if isinstance(node, ast.Assert)]
    assert not lines, f"{path.relative_to(ROOT)} uses assert at lines {lines}; raise a GenviError subclass"
