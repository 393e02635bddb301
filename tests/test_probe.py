"""The linear probe: a converged logistic regression whose scaling and L2 strength are chosen on validation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bench.backbones import build_backbone
from bench.data import load_dataset, select_subset
from bench.training.features import pool_features
from bench.training.pretrain import checkpoint_path, ensure_pretrained
from bench.training.health import NOT_CONVERGED
from bench.training.probe import (
    FALLBACK_L2, FALLBACK_SCALING, L2_GRID, SCALE_NONE, SCALE_STANDARD, SCALE_UNIT_NORM, SCALINGS, choose, fit_logistic,
    sweep_probe,
)
from bench.records import RunSpec
from bench.suite.model import suite_from_dict
from bench.training.cell import run
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


def _sklearn_raw_probe(train_x, train_y, val_x, val_y, test_x, test_y) -> float:
    """The reference: scikit-learn on the raw features, C = 1 / (l2 n) over the grid, chosen on the same validation rows."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=5000, warm_start=True)  # strong to weak, each fit from the last
    best = (-1.0, 0.0)
    for l2 in sorted(L2_GRID, reverse=True):
        model.set_params(C=1.0 / (l2 * len(train_y)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(train_x, train_y)
        score = model.score(val_x, val_y)
        if score > best[0]:
            best = (score, model.score(test_x, test_y))
    return best[1]


@pytest.fixture(scope="module")
def random_vit(tmp_path_factory) -> str:
    """A second network of another kind: test_vit at random init, saved as a weights file."""
    import timm

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "test_vit.pt"
    torch.save(timm.create_model("test_vit", pretrained=False).state_dict(), path)
    return str(path)


# Two networks of different kinds (a CNN pretrained on shapes, a ViT at random init), each at its image size.
NETWORKS = {"test_resnet-shapes": ("test_resnet", 16), "test_vit-random": ("test_vit", 32)}
SKLEARN_SIZES, SKLEARN_SEEDS = (5, 50), (0, 1, 2)


@pytest.fixture(scope="module")
def frozen_and_sklearn(tmp_path_factory, pretrained, random_vit):
    """The frozen arm's runs at 5 and 50 per class on three seeds, each with the reference on the very same rows."""
    dataset = load_dataset({"name": "digits"})
    features_dir = tmp_path_factory.mktemp("features")
    out: dict[tuple[str, int], list] = {}
    for network, (model, image_size) in NETWORKS.items():
        weights = "pretrain:shapes" if model == "test_resnet" else f"file:{random_vit}"
        raw = tiny_suite_dict(strategies=["frozen"], backbones=[{"name": model, "weights": [weights]}],
                              datasets=[{"name": "digits", "sizes": list(SKLEARN_SIZES)}], seeds=list(SKLEARN_SEEDS))
        raw["pretrain"]["shapes"]["training"] = {**raw["pretrain"]["shapes"]["training"], "epochs": 3}
        raw["training"] = {**raw["training"], "image_size": image_size}
        for cell in suite_from_dict(raw).expand():
            result = run(cell, weights_file=pretrained, features_dir=features_dir)
            assert result.status == "done", result.error
            with np.load(features_dir / f"{result.details['features']}.npz") as stored:
                pool, test = stored["train"], stored["test"]
            train, val, y = result.train_indices, result.val_indices, dataset.train_labels
            theirs = _sklearn_raw_probe(pool[train], y[train], pool[val], y[val], test, dataset.test_labels)
            out.setdefault((network, int(cell.size)), []).append((result, theirs))
    return out


@pytest.mark.parametrize("size", SKLEARN_SIZES)
@pytest.mark.parametrize("network", NETWORKS)
def test_frozen_does_at_least_as_well_as_scikit_learn_on_raw_features(frozen_and_sklearn, network, size):
    runs = frozen_and_sklearn[(network, size)]
    ours = float(np.mean([result.test_acc for result, _ in runs]))
    theirs = float(np.mean([reference for _, reference in runs]))
    assert ours > 0.3, "the features should carry signal into digits"
    assert ours >= theirs - 0.005, (ours, theirs, [result.details["probe_scaling"] for result, _ in runs])


def test_a_frozen_run_stores_its_scaling_and_every_candidate_it_tried(frozen_and_sklearn):
    for result, _ in (run for runs in frozen_and_sklearn.values() for run in runs):
        details = result.details
        assert details["probe_scaling"] in SCALINGS
        tried = [(step["scaling"], step["l2"]) for step in details["probe_path"]]
        assert sorted(tried) == sorted((scaling, l2) for scaling in SCALINGS for l2 in L2_GRID)
        # The stored choice follows from the validation accuracies in the path alone.
        assert choose(details["probe_path"], len(result.val_indices)) == (details["probe_scaling"], details["probe_l2"])
        assert all(step["converged"] for step in details["probe_path"]), "raw features must converge too"
        assert NOT_CONVERGED not in result.flags


def test_the_raw_candidate_is_scikit_learns_probe_at_the_same_strength(digits_features):
    """The raw candidate's strength is in the features' own units: scikit-learn's optimum at C = 1 / (l2 n)."""
    from sklearn.linear_model import LogisticRegression

    dataset, features = digits_features
    subset = select_subset(dataset.train_labels, 20, 0, 0.1)
    x, y = features.train[subset.train].astype(np.float64), dataset.train_labels[subset.train]
    # Scaled so the rows' norm is far from one: a strength in the wrong units would show.
    x, test = 4.0 * x, 4.0 * features.test
    for l2 in (1e-2, 1e-3):
        probe = sweep_probe(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x[:5]),
                            torch.from_numpy(y[:5]), dataset.num_classes, grid=(l2,), scalings=(SCALE_NONE,))
        ours = torch.softmax(probe.logits(torch.from_numpy(test)), dim=1).numpy()
        right, wrong = (
            np.abs(ours - LogisticRegression(C=1.0 / (l2 * units * len(y)), tol=1e-10, max_iter=10000)
                   .fit(x, y).predict_proba(test)).mean()
            for units in (1.0, float(np.linalg.norm(x, axis=1).mean()) ** 2)
        )
        # Both solvers stop at a tolerance, so the match is close rather than exact; a strength in
        # the units of norm-one rows would sit nearer the other reference.
        assert right < 5e-3 and right < wrong / 4, (right, wrong)


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
    same_scaling = [step for step in probe.path if step["scaling"] == probe.scaling]
    assert probe.val_acc == max(step["val_acc"] for step in same_scaling)
    # Ties go to the strongest strength that reached the best validation accuracy.
    assert probe.l2 == max(step["l2"] for step in same_scaling if step["val_acc"] == probe.val_acc)


def _step(scaling: str, l2: float, val_acc: float) -> dict:
    return {"scaling": scaling, "l2": l2, "val_acc": val_acc, "converged": 1.0}


def test_a_later_scaling_is_chosen_only_when_it_wins_by_more_than_a_standard_error():
    # 100 validation images at 0.8: one standard error is 0.04.
    none = [_step(SCALE_NONE, 1e-2, 0.70), _step(SCALE_NONE, 1e-3, 0.78), _step(SCALE_NONE, 1e-4, 0.78)]
    assert choose(none + [_step(SCALE_STANDARD, 1e-3, 0.80)], 100) == (SCALE_NONE, 1e-3)
    assert choose(none + [_step(SCALE_STANDARD, 1e-3, 0.86)], 100) == (SCALE_STANDARD, 1e-3)
    # With ten thousand validation images a two-point gain is no longer noise.
    assert choose(none + [_step(SCALE_UNIT_NORM, 1e-1, 0.80)], 10_000) == (SCALE_UNIT_NORM, 1e-1)
    # Perfect accuracy has no spread: a tie goes to the scaling tried first.
    tie = [_step(SCALE_UNIT_NORM, 1e-2, 1.0), _step(SCALE_STANDARD, 1e-1, 1.0)]
    assert choose(tie, 50) == (SCALE_UNIT_NORM, 1e-2)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_the_head_scales_raw_features_as_the_fit_did(digits_features, scaling):
    dataset, features = digits_features
    subset = select_subset(dataset.train_labels, 10, 0, 0.1)
    x, y = torch.from_numpy(features.train), torch.from_numpy(dataset.train_labels)
    val_x, val_y = x[subset.val], y[subset.val]
    probe = sweep_probe(x[subset.train], y[subset.train], val_x, val_y, dataset.num_classes,
                        grid=L2_GRID[::4], scalings=(scaling,))
    assert probe.scaling == scaling
    # The accuracy the choice was made on is the accuracy of the head as handed out.
    assert int((probe.logits(val_x).argmax(1) == val_y).sum()) / len(val_y) == probe.val_acc
    rescaled = probe.logits(val_x * torch.linspace(0.5, 4.0, len(val_x))[:, None]).argmax(1)
    assert torch.equal(rescaled, probe.logits(val_x).argmax(1)) == (scaling == SCALE_UNIT_NORM)


def test_without_validation_rows_the_fallback_is_fitted():
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(30, 8, generator=generator), torch.randint(0, 3, (30,), generator=generator)
    probe = sweep_probe(x, y, x[:0], y[:0], 3)
    assert (probe.scaling, probe.l2, probe.val_acc) == (FALLBACK_SCALING, FALLBACK_L2, None)
    assert len(probe.path) == 1


def test_a_frozen_run_stores_its_choice_and_shares_features_across_cells(tmp_path, pretrained):
    cells = [c for c in _suite().expand()]
    by_key = {(c.size, c.seed): c for c in cells}
    first = run(by_key[("5", 0)], weights_file=pretrained, features_dir=tmp_path)
    assert first.status == "done", first.error
    assert first.details["probe_l2"] in L2_GRID and not first.details["features_cached"]
    assert first.details["probe_scaling"] in SCALINGS
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
