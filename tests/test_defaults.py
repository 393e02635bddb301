"""Every default has one home: a setting's default is written as a literal only where it is defined.

A second literal copy drifts the day the first one changes; the others import the constant.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bench"

# Settings whose default lives in ``bench.config`` (DEFAULT_VAL_FRACTION and the rest).
SETTINGS = {"val_fraction", "test_fraction", "min_effect", "max_retries", "per_gpu"}
# The one module that may spell a store's file name, and the one that may say "the first seed tunes".
STORE_HOME = "store/files.py"
TUNING_HOME = "tuning.py"


def _literal(node: ast.AST | None) -> bool:
    """A number written out, or a call such as ``Field(0.1, ...)`` or ``typer.Option(2, ...)`` whose default is one."""
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    if isinstance(node, ast.Call) and node.args:
        return _literal(node.args[0])
    return False


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def literal_defaults(source: str, where: str) -> list[str]:
    """Places in ``source`` that write one of the defaults as a literal instead of importing it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        pairs: list[tuple[str | None, ast.AST | None]] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            pairs += list(zip([a.arg for a in positional[len(positional) - len(args.defaults):]], args.defaults))
            pairs += [(a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
        elif isinstance(node, ast.keyword):
            pairs.append((node.arg, node.value))
        elif isinstance(node, ast.AnnAssign):
            pairs.append((_name(node.target), node.value))
        elif isinstance(node, ast.Assign):
            pairs += [(_name(target), node.value) for target in node.targets]
        elif isinstance(node, ast.Dict):
            pairs += [(_name(k) if k is not None else None, v) for k, v in zip(node.keys, node.values)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in {"get", "pop"}:
            if len(node.args) == 2:
                pairs.append((_name(node.args[0]), node.args[1]))
        found += [f"{where}:{node.lineno}: {name}" for name, value in pairs if name in SETTINGS and _literal(value)]
        if where != STORE_HOME and _spells_store_file(node):
            found.append(f"{where}:{node.lineno}: a store's file name")
        if where != TUNING_HOME and _first_seed(node):
            found.append(f"{where}:{node.lineno}: the tuning seeds' default")
    # An f-string's pieces are constants of their own: one place is reported once.
    return list(dict.fromkeys(found))


def _spells_store_file(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and node.value == ".db":
        return True
    return isinstance(node, ast.JoinedStr) and any(
        isinstance(part, ast.Constant) and isinstance(part.value, str) and part.value.endswith(".db")
        for part in node.values)


def _first_seed(node: ast.AST) -> bool:
    """``seeds[:1]``: the rule that the sweep tunes on the first seed."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice)):
        return False
    upper = node.slice.upper
    return (_name(node.value) or "").endswith("seeds") and isinstance(upper, ast.Constant) and upper.value == 1


def test_the_finder_finds_each_kind_of_copy():
    source = """
def run(per_gpu: int = 1, *, max_retries=2): ...
class C:
    val_fraction: float = 0.1
    test_fraction: float = Field(0.25, gt=0)
def cli(per_gpu: int = typer.Option(1, "--per-gpu")): ...
probe = {"test_fraction": 0.25, "val_fraction": -0.1}
fraction = spec.get("val_fraction", 0.1)
verdict(min_effect=0.01)
path = results / f"{name}.db"
first = suite.seeds[:1]
"""
    assert sorted(literal_defaults(source, "x.py")) == sorted([
        "x.py:2: per_gpu", "x.py:2: max_retries", "x.py:4: val_fraction", "x.py:5: test_fraction",
        "x.py:6: per_gpu", "x.py:7: test_fraction", "x.py:7: val_fraction", "x.py:8: val_fraction",
        "x.py:9: min_effect", "x.py:10: a store's file name", "x.py:11: the tuning seeds' default",
    ])
    imported = "def run(per_gpu=DEFAULT_PER_GPU, jobs=1): ...\nx = d.get('seed', 0)\nfirst = seeds[:2]\n"
    assert literal_defaults(imported, "x.py") == []


def test_no_default_is_written_outside_its_home():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(PACKAGE))
        found += literal_defaults(path.read_text(encoding="utf-8"), where)
    assert found == []
