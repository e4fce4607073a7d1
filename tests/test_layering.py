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


# ------------------------------------------------------------------------------------------------ circles
def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(node: ast.AST, at_load: bool = True):
    """(import node, whether it runs when the module loads) for every import under `node`, leaving out
    `if TYPE_CHECKING:` blocks (they never run)."""
    for child in ast.iter_child_nodes(node):
        if _type_checking(child):
            for other in child.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]), at_load)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, at_load
        inner = at_load and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _imports(child, inner)


def module_graph(root: Path, package: str) -> dict[str, set[str]]:
    """{module of `package`: the modules of `package` it imports}, wherever the import stands (module level
    or in a function), plus, for an import that runs when the module loads, the packages whose
    `__init__` that import runs first (those outside the importing module's own packages)."""
    paths = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}

    def owner(name: str) -> str | None:  # the module of `package` that `name` is, or is in
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    def parents(name: str) -> set[str]:
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts))}

    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node, at_load in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            for target in filter(None, map(owner, targets)):
                if target == name:
                    continue
                edges.add(target)
                if at_load:
                    edges |= {p for p in parents(target) if p in paths and p not in parents(name) | {name}}
        graph[name] = edges
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (a list of modules whose last imports the first), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_core_has_no_import_circle():
    """No module of `wwm/` needs, at any depth, a module that needs it back (a circle works only while the
    import order happens to suit it, and hides which module is the lower layer)."""
    circle = find_circle(module_graph(ROOT, "wwm"))
    assert circle is None, " -> ".join([*circle, circle[0]])


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return module_graph(tmp_path, "pkg")


def test_the_circle_check_finds_circles(tmp_path):
    """Negative controls: a circle through an import inside a function (the old cache <-> pipeline one) is
    found; one through a package's `__init__` is found (importing `pkg.cfg.fields` at load time runs
    `pkg/cfg/__init__.py`, which needs the importer back); an import only under TYPE_CHECKING, or one in a
    function that needs a package's `__init__`, makes none."""
    graph = _package(tmp_path / "a", {
        "pkg/__init__.py": "",
        "pkg/cache.py": "def f():\n    from pkg.pipeline import FORMAT\n",
        "pkg/pipeline.py": "from pkg import cache\nFORMAT = 2\n",
    })  # fmt: skip
    assert find_circle(graph) == ["pkg.cache", "pkg.pipeline"]
    through_init = {
        "pkg/__init__.py": "",
        "pkg/cfg/__init__.py": "from pkg.cfg.sections import Run\n",
        "pkg/cfg/sections.py": "from pkg.family import Section\nclass Run: ...\n",
        "pkg/cfg/fields.py": "def path_field(): ...\n",
        "pkg/family.py": "from pkg.cfg.fields import path_field\nclass Section: ...\n",
    }
    circle = find_circle(_package(tmp_path / "b", through_init))
    assert circle == ["pkg.cfg", "pkg.cfg.sections", "pkg.family"]
    lazy = {**through_init, "pkg/family.py": "class Section:\n    def f(self):\n        from pkg.cfg.fields import path_field\n"}  # fmt: skip
    assert find_circle(_package(tmp_path / "c", lazy)) is None
    typed = {**through_init,
             "pkg/family.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.cfg import Run\nclass Section: ...\n"}  # fmt: skip
    assert find_circle(_package(tmp_path / "d", typed)) is None
