"""Benchmark: ``frozen[head=sgd]`` on cached features against the same run through the whole model.

``pytest tests/perf --benchmark-enable``: the ratio of the two means is what the fast path
saves per linear-probe run (it grows with epochs: the backbone runs once instead of once per
epoch). Without ``--benchmark-enable`` each runs once and must finish.
"""

from __future__ import annotations

import pytest

from bench.training.pretrain import checkpoint_path, ensure_pretrained
from bench.suite.model import suite_from_dict
from bench.training.cell import run
from tests.conftest import tiny_suite_dict


def _cell(feature_cache: bool):
    # The minibatch head: the logistic-regression probe always fits on extracted features.
    raw = tiny_suite_dict(strategies=[{"name": "frozen", "head": "sgd"}], datasets=[{"name": "digits", "sizes": [20]}])
    raw["training"] = {**raw["training"], "epochs": 8, "image_size": 32, "feature_cache": feature_cache}
    return suite_from_dict(raw).expand()[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    cache = tmp_path_factory.mktemp("pretrained")
    spec = _cell(True)
    ensure_pretrained(spec.pretrain, cache)
    return checkpoint_path(cache, spec.pretrain)


@pytest.mark.benchmark(group="frozen-run")
@pytest.mark.parametrize("feature_cache", [False, True], ids=["whole-model-each-epoch", "cached-features"])
def test_frozen_run(benchmark, weights, feature_cache):
    spec = _cell(feature_cache)
    result = benchmark.pedantic(run, args=(spec,), kwargs={"weights_file": weights}, rounds=3, iterations=1)
    assert result.status == "done", result.error
