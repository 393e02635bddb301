"""Weights sources: their syntax, and whether the weights can be had on this machine now.

``none`` (random init), ``hub`` or ``hub:TAG`` (timm pretrained tags, torchvision weight enums,
served from the local cache when offline), ``file:PATH`` and ``pretrain:NAME``. Checking a
source never downloads anything, and only a ``hub`` source imports the library that serves it,
so a suite of local weights is checked without importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.catalog import parse_backbone


def check_weights_source(backbone: str, weights: str) -> None:
    """Validate the syntax of a weights source and that a ``file:`` exists; raise ValueError."""
    kind, _, arg = weights.partition(":")
    if kind == "none" and not arg:
        return
    if kind == "hub":
        library, model = parse_backbone(backbone)
        if library == "torchvision" and arg:
            import torchvision

            enum = torchvision.models.get_model_weights(model)
            if arg not in enum.__members__ and arg != "DEFAULT":
                raise ValueError(f"{model} has no weights {arg!r}; known: {', '.join(enum.__members__)}")
        return
    if kind == "file":
        path = Path(arg).expanduser()
        if not arg:
            raise ValueError("'file:' needs a path, e.g. file:weights/resnet18.pt")
        if not path.is_file():
            raise ValueError(f"weights file {str(path)!r} does not exist")
        return
    if kind == "pretrain" and arg:
        return
    raise ValueError(f"weights {weights!r}: use none, hub, hub:TAG, file:PATH or pretrain:NAME")


# Switches the hub libraries honour: set, they mean "never use the network".
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
# Long enough for a hub to accept a connection, short enough that planning never waits on one.
HUB_PROBE_S = 0.5
_HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def weights_available(name: str, weights: str) -> str | None:
    """Why ``weights`` for backbone ``name`` cannot be had on this machine now, with the fix; None when they can.

    ``hub`` weights count when they are in the local cache, or when the hub accepts a connection
    within ``HUB_PROBE_S``; nothing is downloaded. ``file:`` must be a readable file.
    """
    kind, _, arg = weights.partition(":")
    if kind == "file":
        path = Path(arg).expanduser()
        try:
            with open(path, "rb"):
                return None
        except OSError as exc:
            return f"weights file {path} cannot be read: {exc.strerror or exc}"
    if kind != "hub":
        return None
    library, model = parse_backbone(name)
    found = _torchvision_cached(model, arg) if library == "torchvision" else _timm_cached(model, arg)
    if isinstance(found, str):
        return found
    cached, label, where, host, fetch = found
    if cached or host is None:
        return None
    offline = library == "timm" and any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on") for var in _OFFLINE_VARS
    )
    if not offline and _reachable(host):
        return None
    why = "HF_HUB_OFFLINE is set" if offline else f"{host} cannot be reached"
    return (
        f"{label} are not in the local cache ({where}) and {why}; fetch them once where there is network "
        f"(python -c \"{fetch}\") and copy that cache here, or load a local file: weights file:PATH in a suite, "
        "--weights file:PATH for check"
    )


def _timm_cached(model: str, tag: str) -> str | tuple[bool, str, str, str | None, str]:
    """(cached, label, cache folder, host to download from, code that fetches them), or why timm has none."""
    import timm
    from timm.models import get_pretrained_cfg

    full = f"{model}.{tag}" if tag else model
    try:
        cfg = get_pretrained_cfg(full)
    except RuntimeError:
        cfg = None
    if cfg is None:
        known = timm.list_pretrained(f"{model}.*")
        shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "") if known else "none"
        return f"timm has no pretrained weights {full!r} (known: {shown}); see 'transfer-bench list backbones --pretrained'"
    full = f"{model}.{cfg.tag}" if getattr(cfg, "tag", None) else full
    label = f"timm weights {full!r}"
    fetch = f"import timm; timm.create_model('{full}', pretrained=True)"
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        # The file the build loads; a cfg that loads through the hub finds any of its files there.
        cached = cached_hub_file(full) is not None
        if not cached and getattr(cfg, "source", None) == "hf-hub":
            repo, _, revision = hub_id.partition("@")
            cached = any(isinstance(try_to_load_from_cache(repo, name, revision=revision or None), str)
                         for name in _HUB_FILES)
        return cached, label, str(constants.HF_HUB_CACHE), "huggingface.co", fetch
    if getattr(cfg, "file", None):
        return Path(cfg.file).expanduser().is_file(), label, str(cfg.file), None, fetch
    if getattr(cfg, "url", None):
        return (*_in_torch_hub(cfg.url), label, *_hub_place(cfg.url), fetch)
    return True, label, "", None, fetch


def _torchvision_cached(model: str, tag: str) -> str | tuple[bool, str, str, str | None, str]:
    import torchvision

    enum = torchvision.models.get_model_weights(model)
    entry = enum[tag] if tag and tag != "DEFAULT" else enum.DEFAULT
    fetch = f"import torchvision; torchvision.models.get_model('{model}', weights='{entry}')"
    return (*_in_torch_hub(entry.url), f"torchvision weights {entry}", *_hub_place(entry.url), fetch)


def _in_torch_hub(url: str) -> tuple[bool]:
    from urllib.parse import urlparse

    import torch

    name = os.path.basename(urlparse(url).path)
    return ((Path(torch.hub.get_dir()) / "checkpoints" / name).is_file(),)


def _hub_place(url: str) -> tuple[str, str | None]:
    from urllib.parse import urlparse

    import torch

    return str(Path(torch.hub.get_dir()) / "checkpoints"), urlparse(url).hostname


def _reachable(host: str) -> bool:
    """Whether ``host`` accepts a connection within ``HUB_PROBE_S``; a proxy is trusted to reach it."""
    import socket
    import threading

    if any(os.environ.get(var) for var in _PROXY_VARS):
        return True
    answered: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=HUB_PROBE_S).close()
            answered.append(True)
        except OSError:
            pass

    # Name resolution has no timeout of its own: the probe runs aside and is not waited on past the limit.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_PROBE_S + 0.1)
    return bool(answered)


def cached_hub_file(full_name: str) -> str | None:
    """The Hugging Face cache's copy of a timm model's weights, or None when it holds none.

    Setting HF_HUB_OFFLINE here would come too late: huggingface_hub reads it when imported.
    """
    import timm

    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cfg = timm.models.get_pretrained_cfg(full_name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg else None
    # A cfg whose source is the hub itself (an hf-hub: name) loads through the hub, not a file.
    if not repo or getattr(cfg, "source", None) == "hf-hub":
        return None
    repo, _, revision = repo.partition("@")
    own = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
    for filename in (*own, "model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return found
    return None
