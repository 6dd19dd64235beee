"""The layout rules of the source tree (README, "Architecture"), checked from the source text.

* no import cycle among the modules of ``models/`` and ``analysis/``, counting imports inside
  functions (only ``if TYPE_CHECKING:`` blocks are left out: they never run);
* ``models/`` is pure: it never imports ``analysis``, and does no plotting;
* no folder of ``analysis/`` holds more than 12 modules;
* no ``object`` type hint stands in for a real type in function signatures of ``analysis/``,
  except where any value is accepted (JSON conversion) or an object is only compared by identity.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "analysis")
MAX_MODULES_PER_FOLDER = 12


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, known: set[str]) -> set[str]:
    """Every module of ``known`` that ``tree`` imports, wherever the import statement is."""
    found: set[str] = set()
    package = module if (ROOT / module.replace(".", "/") / "__init__.py").exists() else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    found.add(f"{base}.{alias.name}")
                elif base in known:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> modules it imports (within ``models`` and ``analysis``)."""
    modules = _modules()
    known = set(modules)
    return {name: _imports(ast.parse(path.read_text(encoding="utf-8")), name, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := dfs(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_inside_a_function():
    """The checker itself: an import inside a function closes a cycle, a TYPE_CHECKING one does not."""
    known = {"p.a", "p.b"}
    a = ast.parse("def f():\n    from p.b import g\n")
    b = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.a import h\nfrom p import a\n")
    graph = {"p.a": _imports(a, "p.a", known), "p.b": _imports(b, "p.b", known)}
    assert graph == {"p.a": {"p.b"}, "p.b": {"p.a"}}
    assert find_cycle(graph) == ["p.a", "p.b", "p.a"]
    assert find_cycle({"p.a": {"p.b"}, "p.b": set()}) is None


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_models_never_import_analysis_or_plot():
    for name, path in _modules().items():
        if not name.startswith("models"):
            continue
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m == "analysis" or m.startswith("analysis.") for m in imported), name
        assert not any(m.startswith("matplotlib") for m in imported), name


@pytest.mark.parametrize(
    "folder", sorted(p for p in (ROOT / "analysis").iterdir() if p.is_dir() and p.name != "__pycache__")
)
def test_folders_stay_small(folder: Path):
    modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= MAX_MODULES_PER_FOLDER, f"{folder.name}: {len(modules)} modules"


#: Where ``object`` is the honest type: any JSON-able value, any TOML value still to be checked,
#: any picklable value of the content-addressed cache.
OBJECT_ALLOWED = {
    ("analysis.report.files", "_clean"),
    ("analysis.report.files", "json_text"),
    ("analysis.report.files", "write_json"),
    ("analysis.dataset.validate_meta", "_check_outcome"),
    ("analysis.dataset.validate_meta", "_check_moderator"),
    ("analysis.dataset.validate_meta", "_check_published"),
    ("analysis.dataset.validate_meta", "_is_number"),
    ("analysis.run.cache", "load"),
    ("analysis.run.cache", "store"),
    ("analysis", "__getattr__"),
}


def test_no_object_stand_in_type_hints():
    offenders = []
    for name, path in _modules().items():
        if not name.startswith("analysis"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (name, node.name) in OBJECT_ALLOWED:
                continue
            hints = [a.annotation for a in (*node.args.args, *node.args.kwonlyargs) if a.annotation] + [node.returns]
            if any(h is not None and "object" in ast.unparse(h).replace("DataTree", "") for h in hints):
                offenders.append(f"{name}.{node.name}")
    assert not offenders, f"object used as a type hint: {offenders}"
