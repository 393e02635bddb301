"""Building backbones: fresh heads, weights from files, clear errors for weights that don't fit."""

from __future__ import annotations

import pytest
import torch

from bench.backbones import build_backbone, check_backbone
from bench.errors import WeightsError


def _outputs_without_head(backbone) -> torch.Tensor:
    torch.manual_seed(123)
    images = torch.randn(2, 3, 32, 32)
    backbone.model.eval()
    with torch.no_grad():
        return backbone.model.forward_features(images)


def _save_reference(tmp_path, num_classes=6):
    torch.manual_seed(7)
    source = build_backbone("test_resnet", "none", num_classes)
    path = tmp_path / "source.pt"
    torch.save({"state_dict": source.model.state_dict(), "epoch": 3}, path)
    return source, path


def test_file_weights_load_the_saved_features_and_a_fresh_head(tmp_path):
    source, path = _save_reference(tmp_path, num_classes=6)
    torch.manual_seed(99)
    random_init = build_backbone("test_resnet", "none", 10)
    torch.manual_seed(99)
    loaded = build_backbone("test_resnet", f"file:{path}", 10)
    assert torch.allclose(_outputs_without_head(loaded), _outputs_without_head(source))
    assert not torch.allclose(_outputs_without_head(loaded), _outputs_without_head(random_init))
    assert loaded.model.get_classifier().out_features == 10  # the 6-class head was dropped


def test_wrong_shaped_weights_file_is_a_clear_error(tmp_path):
    torch.manual_seed(0)
    other = build_backbone("test_vit", "none", 10)
    path = tmp_path / "vit.pt"
    torch.save(other.model.state_dict(), path)
    with pytest.raises(WeightsError, match=r"vit\.pt does not fit timm:test_resnet: .*(missing|unexpected)"):
        build_backbone("test_resnet", f"file:{path}", 10)


def test_a_changed_layer_shape_is_named(tmp_path):
    _, path = _save_reference(tmp_path)
    state = torch.load(path)["state_dict"]
    state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"shape mismatch: layer1\.0\.conv1\.weight"):
        build_backbone("test_resnet", f"file:{path}", 10)


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights")
    with pytest.raises(WeightsError, match=r"notes\.pt: not a PyTorch checkpoint"):
        build_backbone("test_resnet", f"file:{path}", 10)


def test_torchvision_backbone_gets_a_new_head_and_stages():
    backbone = build_backbone("torchvision:resnet18", "none", 3)
    assert backbone.head == ["fc.weight", "fc.bias"]
    assert backbone.model.fc.out_features == 3
    firsts = [stage[0].split(".")[0] for stage in backbone.stages]
    assert firsts == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]


def test_torchvision_hub_weights_offline_name_the_file_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("torch.hub.load_state_dict_from_url", _offline)
    with pytest.raises(WeightsError, match="file:PATH"):
        build_backbone("torchvision:resnet18", "hub", 10)


def test_timm_hub_weights_offline_name_the_file_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="not in the local cache.*file:PATH"):
        build_backbone("test_resnet", "hub", 10)


def _offline(*args, **kwargs):
    raise OSError("network is unreachable")


def test_unknown_backbone_suggests_names():
    with pytest.raises(KeyError, match="did you mean 'test_resnet'"):
        check_backbone("test_resnett")
