"""The frozen fast path: features extracted once are what the head sees, and a run uses them."""

from __future__ import annotations

import numpy as np
import torch

from bench.backbones import build_backbone
from bench.training.features import FeatureLoader, extract_features
from bench.records import RunSpec
from bench.suite.model import suite_from_dict
from bench.training.cell import run
from tests.conftest import tiny_suite_dict


def test_extracted_features_are_the_classifier_input():
    torch.manual_seed(0)
    backbone = build_backbone("test_resnet", "none", 5)
    images = torch.randn(6, 3, 32, 32)
    loader = [(images[:4], torch.arange(4)), (images[4:], torch.arange(2))]
    features, labels = extract_features(backbone.model, backbone.classifier, loader, torch.device("cpu"), amp=False)
    with torch.no_grad():
        expected = backbone.model.forward_head(backbone.model.forward_features(images), pre_logits=True)
    assert torch.allclose(features, expected, atol=1e-6)
    assert labels.tolist() == [0, 1, 2, 3, 0, 1]


def test_feature_loader_reshuffles_per_epoch_reproducibly():
    features, labels = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    first = FeatureLoader(features, labels, batch_size=4, shuffle=True, seed=3)
    second = FeatureLoader(features, labels, batch_size=4, shuffle=True, seed=3)
    epoch_a = [y.tolist() for _, y in first]
    assert epoch_a == [y.tolist() for _, y in second]
    assert epoch_a != [y.tolist() for _, y in first], "the next epoch is a new order"
    assert sorted(sum(epoch_a, [])) == list(range(10)) and len(first) == 3


def _frozen_cell(feature_cache: bool) -> RunSpec:
    """A frozen cell whose head trains by minibatches, on cached features or through the model."""
    raw = tiny_suite_dict(strategies=[{"name": "frozen", "head": "sgd"}], datasets=[{"name": "digits", "sizes": [5]}])
    raw["training"] = {**raw["training"], "epochs": 3, "feature_cache": feature_cache}
    return suite_from_dict(raw).expand()[0]


def test_a_frozen_run_passes_each_image_through_the_backbone_once(tmp_path, monkeypatch):
    from bench.training.pretrain import checkpoint_path, ensure_pretrained

    spec = _frozen_cell(feature_cache=True)
    ensure_pretrained(spec.pretrain, tmp_path)
    calls = {"images": 0}
    original = torch.nn.Conv2d.forward

    def counting(self, x):
        if self.in_channels == 3:  # the stem: once per image that enters the backbone
            calls["images"] += x.shape[0]
        return original(self, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", counting)
    result = run(spec, weights_file=checkpoint_path(tmp_path, spec.pretrain))
    assert result.status == "done", result.error
    assert result.epochs_run == 3
    seen_once = len(result.train_indices) + len(result.val_indices) + _test_size()
    assert calls["images"] == seen_once
    assert np.isfinite(result.test_acc)


def _test_size() -> int:
    from bench.data import load_dataset

    return len(load_dataset({"name": "digits"}).test_labels)


def test_feature_cache_is_part_of_the_cell_id():
    assert _frozen_cell(True).run_id != _frozen_cell(False).run_id
