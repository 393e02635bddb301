"""Which backbones exist: timm and torchvision names, checked without importing either library.

Importing timm or torchvision takes seconds (both import torch), and every ``plan`` and ``run``
checks a suite's names. Each library's list is saved once per installed version in the user's
cache folder, so a later check is a file read. A name missing from a saved list is asked of the
library itself before it is refused: the list only makes the common case fast.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from bench.errors import did_you_mean

LIBRARIES = ("timm", "torchvision")
CACHE_ENV = "TRANSFER_BENCH_CACHE"


def parse_backbone(name: str) -> tuple[str, str]:
    """Split ``torchvision:resnet18`` / ``timm:resnet18`` / ``resnet18`` into (library, model)."""
    library, sep, model = name.partition(":")
    if sep and library in LIBRARIES:
        return library, model
    return "timm", name


def cache_dir() -> Path:
    """Where machine-wide, suite-independent lists live: $TRANSFER_BENCH_CACHE, else the XDG cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transfer-bench"


def _installed_version(library: str) -> str:
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return "unknown"


def _library_names(library: str) -> list[str]:
    if library == "torchvision":
        import torchvision

        return sorted(torchvision.models.list_models(module=torchvision.models))
    import timm

    return list(timm.list_models())


@lru_cache(maxsize=None)
def known_names(library: str) -> frozenset[str]:
    """Every model name of ``library`` at its installed version, from the saved list when there is one."""
    path = cache_dir() / f"{library}-{_installed_version(library)}-models.json"
    try:
        return frozenset(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        pass
    names = _library_names(library)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(names), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass  # a read-only home only costs the import next time
    return frozenset(names)


def _library_knows(library: str, model: str) -> bool:
    if library == "torchvision":
        return model in _library_names(library)
    import timm

    return timm.is_model(model)  # also takes pretrained tags (resnet18.a1_in1k) and deprecated names


def check_backbone(name: str) -> None:
    """Raise KeyError with suggestions if the backbone is not known to its library."""
    library, model = parse_backbone(name)
    # timm names may carry a pretrained tag after the first dot; the architecture is what exists.
    architecture = model.partition(".")[0] if library == "timm" else model
    if architecture in known_names(library) or _library_knows(library, model):
        return
    hint = did_you_mean(model, sorted(known_names(library)))
    raise KeyError(f"unknown {library} backbone {model!r}{hint}; see 'transfer-bench list backbones'")


def list_backbones(pattern: str = "*", library: str = "timm") -> list[str]:
    """Model names a suite can use, filtered by a shell-style pattern."""
    import fnmatch

    if library == "torchvision":
        return [f"torchvision:{n}" for n in sorted(known_names(library)) if fnmatch.fnmatch(n, pattern)]
    return [n for n in sorted(known_names(library)) if fnmatch.fnmatch(n, pattern)]
