"""Backbone names are checked from a list saved per library version, without importing the library."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.catalog import check_backbone, known_names, parse_backbone

CHECK = ("from bench.catalog import check_backbone; check_backbone({name!r}); "
         "import sys; print('timm' in sys.modules, 'torch' in sys.modules)")


def _check_in_a_fresh_process(name: str, cache) -> list[str]:
    done = subprocess.run([sys.executable, "-c", CHECK.format(name=name)], capture_output=True, text=True,
                          env={"TRANSFER_BENCH_CACHE": str(cache), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_saved_list_spares_the_import_of_timm_and_torch(tmp_path):
    assert _check_in_a_fresh_process("resnet18", tmp_path) == ["True", "True"]  # the first check builds the list
    assert [p.name for p in tmp_path.iterdir()][0].startswith("timm-")
    assert _check_in_a_fresh_process("resnet18", tmp_path) == ["False", "False"]


def test_a_damaged_list_is_built_again(tmp_path):
    _check_in_a_fresh_process("resnet18", tmp_path)
    (saved,) = tmp_path.iterdir()
    saved.write_text("[not json")
    assert _check_in_a_fresh_process("resnet18", tmp_path) == ["True", "True"]
    assert "resnet18" in saved.read_text()


def test_names_with_tags_and_libraries_and_unknown_names(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFER_BENCH_CACHE", str(tmp_path))
    known_names.cache_clear()
    check_backbone("resnet18.a1_in1k")
    check_backbone("torchvision:resnet18")
    assert parse_backbone("timm:test_vit") == ("timm", "test_vit")
    with pytest.raises(KeyError, match="did you mean 'resnet18'"):
        check_backbone("resnet81")
    with pytest.raises(KeyError, match="unknown torchvision backbone 'resnet1800'"):
        check_backbone("torchvision:resnet1800")
    known_names.cache_clear()
