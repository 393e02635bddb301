"""``weights: hub`` served from local caches with the network cut: a Hugging Face cache and torch hub's.

Each check runs in a fresh interpreter, because huggingface_hub reads HF_HOME and
HF_HUB_CACHE when it is imported, as it would for a user who exports them. That interpreter
refuses every socket connection and counts the attempts: a cached load makes none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench.backbones import build_backbone

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, socket, sys

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:2] or args[:1])
        raise OSError("network disabled for this check")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    import torch
    from bench.backbones import build_backbone

    name, reference_path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if reference_path.endswith(".safetensors"):
        from safetensors.torch import load_file
        reference = load_file(reference_path)
    else:
        reference = torch.load(reference_path, weights_only=True)
    torch.manual_seed(0)
    hub = build_backbone(name, "hub", 10)
    torch.manual_seed(0)
    scratch = build_backbone(name, "none", 10)
    head = {key.rsplit(".", 1)[0] for key in hub.head}
    state = hub.model.state_dict()
    body = [key for key in reference if key.rsplit(".", 1)[0] not in head]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    hub.model.eval()
    scratch.model.eval()
    with torch.no_grad():
        difference = (hub.model(x) - scratch.model(x)).abs().max().item()
    print(json.dumps({
        "loaded": sum(torch.equal(state[key], reference[key]) for key in body),
        "body": len(body),
        "output_difference": difference,
        "head_out": hub.classifier.out_features,
        "network_attempts": len(attempts),
    }))
    """
)


def _run_child(env: dict[str, str], *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _own_weights(model: torch.nn.Module) -> torch.nn.Module:
    """The model's own weights, moved off any fresh init so that loading them shows in its outputs.

    A freshly initialised MobileNet passes almost nothing through its blocks, so two inits give
    the same outputs to nine digits; weights pushed away from that behave like trained ones.
    """
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model


def _clean_env(tmp_path: Path) -> dict[str, str]:
    hub = ("HF_", "HUGGINGFACE_", "TORCH_HOME", "TRANSFORMERS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(hub)}
    env["PYTHONPATH"] = str(REPO)
    # No offline switch: the cache alone must be enough.
    env["HF_HOME"] = str(tmp_path / "hf")
    env["TORCH_HOME"] = str(tmp_path / "torch")
    return env


@pytest.mark.slow
def test_timm_hub_weights_load_from_a_hugging_face_cache_with_no_network(tmp_path):
    import timm
    from safetensors.torch import save_file

    cfg = timm.models.get_pretrained_cfg("test_resnet")
    repo = cfg.hf_hub_id  # timm/test_resnet.r160_in1k
    # The model's own weights at another seed, so they differ from any init the check makes.
    own = _own_weights(timm.create_model("test_resnet", pretrained=False))
    state = {k: v.contiguous() for k, v in own.state_dict().items()}
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hf" / "hub" / f"models--{repo.replace('/', '--')}"
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)
    snapshot = cache / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))

    report = _run_child(_clean_env(tmp_path), "test_resnet", str(snapshot / "model.safetensors"), "32")
    assert report["body"] > 0
    assert report["loaded"] == report["body"]  # every non-head tensor is the cached one
    assert report["head_out"] == 10  # the head is fresh, sized for the target
    assert report["network_attempts"] == 0
    assert report["output_difference"] > 1e-3


@pytest.mark.slow
def test_torchvision_hub_weights_load_from_torch_hub_checkpoints_with_no_network(tmp_path):
    import torchvision

    weights = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT
    own = _own_weights(torchvision.models.get_model("mobilenet_v3_small"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    path = checkpoints / os.path.basename(weights.url)
    torch.save(own.state_dict(), path)

    report = _run_child(_clean_env(tmp_path), "torchvision:mobilenet_v3_small", str(path), "64")
    assert report["body"] > 0
    assert report["loaded"] == report["body"]
    assert report["head_out"] == 10
    assert report["network_attempts"] == 0
    assert report["output_difference"] > 1e-3


def test_without_a_cache_the_timm_hub_fails_with_the_way_out(tmp_path, monkeypatch):
    """The same cut network with an empty cache: one line that names the file way out."""
    from bench.errors import WeightsError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(WeightsError, match="file:PATH"):
        build_backbone("test_resnet", "hub", 10)
