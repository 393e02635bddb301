"""The linear probe: a converged logistic regression whose L2 strength is chosen on validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bench.backbones import build_backbone
from bench.data import load_dataset, select_subset
from bench.features import pool_features
from bench.pretrain import checkpoint_path, ensure_pretrained
from bench.probe import L2_GRID, fit_logistic, sweep_probe
from bench.records import RunSpec
from bench.suite import suite_from_dict
from bench.train import run
from tests.conftest import tiny_suite_dict

CPU = torch.device("cpu")


def _suite(sizes=(5, 20)):
    raw = tiny_suite_dict(strategies=["frozen"], datasets=[{"name": "digits", "sizes": list(sizes)}], seeds=[0, 1])
    raw["pretrain"]["shapes"]["training"] = {**raw["pretrain"]["shapes"]["training"], "epochs": 3}
    return suite_from_dict(raw)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """test_resnet pretrained on shapes: weights that carry some signal into digits."""
    cache = tmp_path_factory.mktemp("pretrained")
    spec = _suite().expand()[0]
    ensure_pretrained(spec.pretrain, cache)
    return checkpoint_path(cache, spec.pretrain)


@pytest.fixture(scope="module")
def digits_features(pretrained):
    dataset = load_dataset({"name": "digits"})
    backbone = build_backbone("test_resnet", "none", dataset.num_classes, weights_file=pretrained)
    features = pool_features(backbone.model, backbone.classifier, dataset, identity={"test": 1}, image_size=16,
                             mean=backbone.mean, std=backbone.std, device=CPU, amp=False, cache_dir=None, num_workers=0)
    return dataset, features


def _sklearn_probe(train_x, train_y, val_x, val_y, test_x, test_y) -> float:
    """scikit-learn's own pipeline, C swept on the same grid and chosen on the same validation rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = (-1.0, None)
    for l2 in sorted(L2_GRID, reverse=True):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / (l2 * len(train_y)), max_iter=2000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(train_x, train_y)
        score = model.score(val_x, val_y)
        if score > best[0]:
            best = (score, model)
    return float(best[1].score(test_x, test_y))


@pytest.mark.parametrize("size", [5, "all"])
def test_probe_matches_scikit_learn_within_a_point(digits_features, size):
    dataset, features = digits_features
    subset = select_subset(dataset.train_labels, size, 0, 0.1)
    y = dataset.train_labels
    train_x, val_x = features.train[subset.train], features.train[subset.val]
    probe = sweep_probe(torch.from_numpy(train_x), torch.from_numpy(y[subset.train]),
                        torch.from_numpy(val_x), torch.from_numpy(y[subset.val]), dataset.num_classes)
    ours = float(((torch.from_numpy(features.test) @ probe.weight.T + probe.bias).argmax(1).numpy()
                  == dataset.test_labels).mean())
    theirs = _sklearn_probe(train_x, y[subset.train], val_x, y[subset.val], features.test, dataset.test_labels)
    assert ours > 0.3, "the pretrained features should carry signal into digits"
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


def test_fit_reaches_the_optimum_of_its_objective():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=generator, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(200, generator=generator, dtype=torch.float64) > 0).long()
    weight, bias, converged = fit_logistic(x, y, 2, 1e-2)
    assert converged
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + 0.5e-2 * (weight**2).sum()
    loss.backward()
    assert weight.grad.abs().max() < 1e-3 and bias.grad.abs().max() < 1e-3


def test_strength_is_chosen_on_validation_not_training():
    """Pure-noise features: training accuracy rewards no regularisation, validation does not."""
    generator = torch.Generator().manual_seed(1)
    x, val_x = torch.randn(40, 60, generator=generator), torch.randn(200, 60, generator=generator)
    y, val_y = torch.randint(0, 2, (40,), generator=generator), torch.randint(0, 2, (200,), generator=generator)
    probe = sweep_probe(x, y, val_x, val_y, 2)
    assert probe.train_acc == 1.0 or probe.l2 > min(L2_GRID)
    accs = [step["val_acc"] for step in probe.path]
    assert probe.val_acc == max(accs)
    # Ties go to the strongest strength that reached the best validation accuracy.
    assert probe.l2 == max(step["l2"] for step in probe.path if step["val_acc"] == probe.val_acc)


def test_a_frozen_run_stores_its_choice_and_shares_features_across_cells(tmp_path, pretrained):
    cells = [c for c in _suite().expand()]
    by_key = {(c.size, c.seed): c for c in cells}
    first = run(by_key[("5", 0)], weights_file=pretrained, features_dir=tmp_path)
    assert first.status == "done", first.error
    assert first.details["probe_l2"] in L2_GRID and not first.details["features_cached"]
    assert np.isfinite(first.details["logme"])
    assert first.trainable_params == 970  # 96 features x 10 classes + 10 biases
    others = [run(by_key[key], weights_file=pretrained, features_dir=tmp_path) for key in [("20", 0), ("5", 1)]]
    assert all(r.status == "done" and r.details["features_cached"] for r in others)
    assert len(list(tmp_path.glob("*.npz"))) == 1, "one extraction serves every seed and size"
    assert first.details["features"] == others[0].details["features"]


def test_a_damaged_feature_file_is_rebuilt(tmp_path, pretrained):
    spec: RunSpec = _suite(sizes=(5,)).expand()[0]
    assert run(spec, weights_file=pretrained, features_dir=tmp_path).status == "done"
    (stored,) = tmp_path.glob("*.npz")
    stored.write_bytes(b"not an npz file")
    again = run(spec, weights_file=pretrained, features_dir=tmp_path)
    assert again.status == "done", again.error
    assert not again.details["features_cached"]
