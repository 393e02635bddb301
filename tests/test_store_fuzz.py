"""A real store truncated at every page boundary and with flipped bytes, through ``plan``, ``report`` and ``export``.

Each command either works or exits 2 with one line, never with a traceback, and the damaged
file keeps its bytes and gets nothing beside it.
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import pytest

from tests.test_exit_codes import cli, tiny, write
from tests.test_store_robustness import NAME, beside, digest, small_store

# Flips land anywhere in the file; report renders plots, so it sees every few variants only.
FLIPS = 200
REPORT_EVERY = 5
SEED = 20240611


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    return small_store(tmp_path_factory.mktemp("store") / f"{NAME}.db", runs=8)


def _variants(original: Path) -> list[tuple[str, bytes]]:
    data = original.read_bytes()
    page = int.from_bytes(data[16:18], "big") or 65536
    out = [(f"truncated at page {n}", data[: n * page]) for n in range(len(data) // page)]
    out += [(f"truncated mid-page {n}", data[: n * page + page // 2]) for n in range(len(data) // page)]
    rng = random.Random(SEED)
    for i in range(FLIPS):
        damaged = bytearray(data)
        # A third of the flips hit the header and the first page, where the schema lives.
        where = rng.randrange(100 if i % 3 == 0 else len(data))
        for _ in range(rng.choice((1, 1, 2, 8))):
            spot = min(len(data) - 1, where + rng.randrange(16))
            damaged[spot] ^= 1 << rng.randrange(8)
        out.append((f"flip {i} at byte {where}", bytes(damaged)))
    return out


@pytest.mark.slow
def test_damaged_copies_of_a_store_give_one_line_or_a_result_never_a_traceback(original, tmp_path):
    suite = write(tmp_path / f"{NAME}.yaml", tiny(NAME))
    variants = _variants(original)
    outcomes: dict[str, int] = {}
    problems: list[str] = []
    for i, (label, data) in enumerate(variants):
        folder = tmp_path / f"v{i}"
        folder.mkdir()
        path = folder / f"{NAME}.db"
        path.write_bytes(data)
        before = digest(path)
        commands = [("plan", suite, "--results-dir", folder, "--no-estimate"),
                    ("export", path, "--out", tmp_path / f"v{i}.csv")]
        if i % REPORT_EVERY == 0:
            commands.append(("report", path, "--out", tmp_path / f"report{i}"))
        for args in commands:
            try:
                result = cli(*args)
            except AssertionError as exc:  # a traceback: collected, so one run shows every kind
                problems.append(f"{label}: {args[0]}: {exc.__cause__!r}")
                continue
            outcomes[f"{args[0]} exit {result.exit_code}"] = outcomes.get(f"{args[0]} exit {result.exit_code}", 0) + 1
            if result.exit_code not in (0, 2):
                problems.append(f"{label}: {args[0]} exited {result.exit_code}: {result.output[-300:]}")
            elif result.exit_code == 2:
                lines = result.stderr.strip().splitlines()
                if len(lines) != 1 or not lines[0].startswith("error: "):
                    problems.append(f"{label}: {args[0]}: {len(lines)} lines: {result.stderr[-300:]}")
            if digest(path) != before:
                problems.append(f"{label}: {args[0]} changed the file")
            if beside(path):
                problems.append(f"{label}: {args[0]} left {beside(path)}")
        shutil.rmtree(folder)
    sys.stderr.write(f"\n[store-fuzz] {len(variants)} damaged copies: {dict(sorted(outcomes.items()))}\n")
    assert not problems, "\n".join(problems[:20])
    assert outcomes.get("export exit 2", 0) > len(variants) // 4, "most damage must be noticed"
