"""The package's shape: folders by stage, no import cycles among ``bench`` modules, no module too big to hold in mind."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bench"
MAX_LINES = 400
# The stages a cell passes through, each a folder; only the shared vocabulary sits beside them.
STAGES = {"cli", "suite", "planning", "execution", "training", "data", "store", "report"}
VOCABULARY = {"__init__", "__main__", "errors", "config", "records", "failures", "strategies", "backbones",
              "catalog", "weights", "tuning", "procs"}
# Functions of the Python API: a subpackage of the same name would shadow them.
API = {"run", "render"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """``bench`` modules that ``path`` imports anywhere in it, deferred imports in functions included."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # Imports only a type checker runs are no cycle when the program runs.
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {name: _imports(path, modules) for name, path in paths.items()}
    # Importing ``bench.a.b`` runs ``bench.a`` first; a package importing its own modules is not a cycle.
    return {name: {t for t in targets if not name.startswith(t + ".") and not t.startswith(name + ".")}
            for name, targets in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_bench_modules_import_each_other_in_a_circle():
    assert _cycles(_graph()) == []


def test_no_module_is_too_big_to_hold_in_mind():
    sizes = {str(p.relative_to(PACKAGE.parent)): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


def test_every_stage_is_a_subpackage():
    assert {stage for stage in STAGES if (PACKAGE / stage / "__init__.py").is_file()} == STAGES


def test_only_the_shared_vocabulary_sits_beside_the_stages():
    assert {p.stem for p in PACKAGE.glob("*.py")} - VOCABULARY == set()
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders - STAGES == set()


def test_no_subpackage_shadows_a_function_of_the_api():
    import bench

    assert all(callable(getattr(bench, name)) for name in API)
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir()} & API == set()
