"""The layers of docs/architecture.md, as facts of the folders: the core (`wwm/`) imports no deep-learning
framework and neither trainer, at any depth (module level or inside a function); each trainer package
imports its own framework only; `wwm_cli` alone may import everything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = {"jax", "jaxlib", "flax", "optax", "orbax", "torch", "accelerate", "tensorboardX"}
FORBIDDEN = {
    "wwm": FRAMEWORKS | {"wwm_jax", "wwm_torch", "wwm_cli"},
    "wwm_jax": {"torch", "accelerate", "wwm_torch", "wwm_cli"},
    "wwm_torch": {"jax", "jaxlib", "flax", "optax", "orbax", "wwm_jax", "wwm_cli"},
}


def imported_roots(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every absolute import in a file, wherever it stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_what_its_layer_may(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, package
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for name, line in sorted(imported_roots(path))
        if name in FORBIDDEN[package]
    ]
    assert not bad, "\n".join(bad)


def test_the_check_finds_a_forbidden_import_inside_a_function(tmp_path):
    """Negative control: an import hidden in a function body is found."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    if True:\n        from wwm_jax.train import run\n")
    assert ("wwm_jax", 3) in imported_roots(source)
