"""Suite files fuzzed: whatever the YAML, loading gives a Suite or one SuiteError line, never another exception.

The ``fuzz`` tests draw a thousand examples each (the mutated quick suite and the pathological
files, slower to load, a few hundred): 2,600 in all, about two minutes. Run them alone with
``pytest -m fuzz --hypothesis-show-statistics``.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.errors import SuiteError
from bench.suite.model import Suite, load_suite

REPO = Path(__file__).resolve().parents[1]
QUICK = yaml.safe_load((REPO / "suites" / "quick.yaml").read_text())
QUICK_TEXT = (REPO / "suites" / "quick.yaml").read_text()
FUZZ_EXAMPLES = 1000


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                   HealthCheck.too_slow])


FUZZ = _settings(FUZZ_EXAMPLES)

KEYS = sorted({
    "name", "description", "backbones", "datasets", "strategies", "seeds", "training", "pretrain", "device",
    "executor", "weights", "label", "sizes", "root", "download", "path", "test_fraction", "val_fraction", "options",
    "epochs", "batch_size", "image_size", "optimizer", "lr", "patience", "time_budget", "timeout", "augment",
    "amp", "num_workers", "params", "k", "dataset", "classes", "per_class",
})
# Bounded numbers: an int shorthand such as `seeds: N` expands to N entries.
scalars = (
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12) | st.sampled_from(["all", "scratch", "digits", "test_resnet", "pretrain:shapes",
                                               "file:/nonexistent.pt", "hub", "none", "10m", "cuda:0", "auto"])
)
keys = st.sampled_from(KEYS) | st.text(max_size=10) | st.integers(-5, 5)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12,
)


def _check(path: Path) -> None:
    """Load a file; anything but a Suite or a one-line SuiteError fails the test."""
    try:
        suite = load_suite(path)
    except SuiteError as exc:
        text = str(exc)
        assert text and "\n" not in text, repr(text)
        return
    assert isinstance(suite, Suite)


def _write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "fuzzed.yaml"
    path.write_text(content)
    return path


@pytest.mark.fuzz
@FUZZ
@given(document=values)
def test_random_structures(tmp_path, document):
    _check(_write(tmp_path, yaml.safe_dump(document)))


def _mutate(data: Any, path: list[Any], action: str, payload: Any) -> Any:
    """Apply one edit at ``path`` (indices taken modulo the container's size)."""
    data = copy.deepcopy(data)
    parent, node = None, data
    key: Any = None
    for step in path:
        if isinstance(node, dict) and node:
            key = sorted(node, key=str)[step % len(node)]
        elif isinstance(node, list) and node:
            key = step % len(node)
        else:
            break
        parent, node = node, node[key]
    if parent is None:
        return payload if action == "replace" else data
    if action == "replace":
        parent[key] = payload
    elif action == "delete":
        del parent[key]
    elif action == "misspell" and isinstance(parent, dict) and isinstance(key, str):
        parent[key[:-1] + ("x" if not key.endswith("x") else "y") if key else "x"] = parent.pop(key)
    elif action == "wrap":
        parent[key] = [node]
    return data


@pytest.mark.fuzz
@_settings(300)
@given(
    edits=st.lists(
        st.tuples(st.lists(st.integers(0, 20), min_size=1, max_size=5),
                  st.sampled_from(["replace", "delete", "misspell", "wrap"]), values),
        min_size=1, max_size=4,
    )
)
def test_mutated_quick_suite(tmp_path, edits):
    data = QUICK
    for path, action, payload in edits:
        data = _mutate(data, path, action, payload)
    _check(_write(tmp_path, yaml.safe_dump(data)))


@pytest.mark.fuzz
@FUZZ
@given(cuts=st.lists(st.tuples(st.integers(0, len(QUICK_TEXT)), st.integers(0, 8), st.text(max_size=6)), max_size=4))
def test_edited_quick_text(tmp_path, cuts):
    text = QUICK_TEXT
    for at, length, insert in cuts:
        text = text[:at] + insert + text[at + length:]
    _check(_write(tmp_path, text))


def _nested(depth: int, style: str) -> str:
    if style == "flow-list":
        return "[" * depth + "1" + "]" * depth
    if style == "flow-map":
        return "{a: " * depth + "1" + "}" * depth
    return "\n" + "".join("  " * i + "- \n" for i in range(1, depth)) + "  " * depth + "1"


def _alias_bomb(levels: int, fanout: int) -> str:
    lines = ["l0: &l0 [" + ", ".join(["x"] * fanout) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + f"\nbackbones: *l{levels - 1}\ndatasets: [digits]\n"


@st.composite
def pathological(draw) -> str:
    """YAML meant to hurt a loader: deep nesting, alias bombs and cycles, huge numbers, odd tags, control text."""
    kind = draw(st.sampled_from(["nested", "bomb", "cycle", "merge", "number", "tag", "text", "mixed"]))
    if kind == "nested":
        depth = draw(st.integers(1, 3000))
        where = draw(st.sampled_from(["backbones", "training", "pretrain", "datasets", "seeds"]))
        return f"name: deep\n{where}: {_nested(depth, draw(st.sampled_from(['flow-list', 'flow-map', 'block'])))}\n"
    if kind == "bomb":
        return _alias_bomb(draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    if kind == "cycle":
        return draw(st.sampled_from(["backbones: &a [*a]\n", "training: &t {lr: *t}\n", "a: &a {b: [*a]}\nseeds: *a\n"]))
    if kind == "merge":
        chain = draw(st.integers(1, 400))
        lines = ["m0: &m0 {epochs: 1}"] + [f"m{i}: &m{i} {{<<: *m{i - 1}, k{i}: {i}}}" for i in range(1, chain)]
        return "\n".join(lines) + f"\ntraining: *m{chain - 1}\nbackbones: [test_resnet]\ndatasets: [digits]\n"
    if kind == "number":
        digits = draw(st.integers(1, 20000))
        key = draw(st.sampled_from(["seeds", "training: {epochs", "training: {lr", "datasets: [{name: digits, sizes: ["]))
        closing = {"seeds": "", "training: {epochs": "}", "training: {lr": "}", "datasets: [{name: digits, sizes: [": "]}]"}
        sign = draw(st.sampled_from(["", "-", "0x", "1e", "0o"]))
        return f"backbones: [test_resnet]\n{key}: {sign}{'9' * digits}{closing[key]}\n"
    if kind == "tag":
        tag = draw(st.sampled_from(["!!python/object:os.system", "!!python/name:os.system", "!!binary", "!!timestamp",
                                    "!!set", "!!omap", "!!pairs", "!custom", "!!float", "!!int", "!!str", "!!null"]))
        value = draw(st.sampled_from(["x", "[1, 2]", "{a: 1}", "2001-13-45", "AAAA", "'1'"]))
        return f"backbones: {tag} {value}\ndatasets: [digits]\n"
    if kind == "text":
        return draw(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
    parts = draw(st.lists(st.sampled_from(["&a ", "*a ", "<<: ", "? ", "- ", "[", "]", "{", "}", ": ", ",", "\n", "  ",
                                           "'", '"', "!!set ", "|", ">", "#", "---\n", "...\n", "%YAML 1.1\n", "key",
                                           "\t", "\x00", "\ufeff"]), max_size=60))
    return "".join(parts)


@pytest.mark.fuzz
@_settings(300)
@given(text=pathological())
def test_pathological_files(tmp_path, text):
    _check(_write(tmp_path, text))


@pytest.mark.parametrize("text", [
    "name: deep\nbackbones: " + "[" * 5000 + "]" * 5000 + "\n",
    "a: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
    _alias_bomb(9, 9),
    "backbones: &a [*a]\n",
    "seeds: " + "9" * 5000 + "\n",
    "description: " + "x" * (300 << 10) + "\n",
    "training:\n" + "".join(f"  k{i}: 1\n" for i in range(8000)),
], ids=["deep-list", "deep-map", "alias-bomb", "alias-cycle", "huge-int", "too-big", "many-keys"])
def test_known_pathological_files_are_one_line_and_quick(tmp_path, text):
    import time

    # CPU seconds, not wall-clock ones: a blow-up costs CPU, and a busy machine's other work does not count.
    started = time.process_time()
    with pytest.raises(SuiteError) as caught:
        load_suite(_write(tmp_path, text))
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400, str(caught.value)[:500]
    assert time.process_time() - started < 20


@pytest.mark.parametrize("content", ["", "- a list\n- of things\n", "name: [unclosed\n", "\x00\x01binary", "{{{{"])
def test_degenerate_files(tmp_path, content):
    _check(_write(tmp_path, content))


def test_undecodable_and_missing_files(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    _check(path)
    _check(tmp_path / "missing.yaml")
    _check(tmp_path)


def test_a_huge_seed_count_is_a_suite_error(tmp_path):
    _check(_write(tmp_path, yaml.safe_dump({**QUICK, "seeds": 10**12})))


BAD_FILES = {
    "misspelt": "name: bad\nbackbones: [test_resnet]\ndatasets: [digits]\ntrainig: {epochs: 1}\n",
    "wrong-type": "name: bad\nbackbones: [test_resnet]\ndatasets: [{name: digits, sizes: [ten]}]\n",
    "not-yaml": "name: bad\nbackbones: [test_resnet\n",
}


@pytest.mark.slow
def test_plan_on_bad_files_exits_2_with_one_line(tmp_path):
    for name, content in BAD_FILES.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(content)
        done = subprocess.run([sys.executable, "-m", "bench", "plan", str(path)], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (name, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and f"{name}.yaml" in lines[0], (name, lines)

