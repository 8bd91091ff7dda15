"""Where model weights come from: torchvision's hash-checked cache, or a local file.

Nothing here runs torch compute, so the gunicorn master may use it before it forks
(model_loader.preload): a missing file is reported once, clearly, instead of by every worker.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torchvision.models import get_model_weights, list_models
from torchvision.models._api import WeightsEnum

DOWNLOAD_TIMEOUT_S = 60


class WeightsError(Exception):
    """Weights could not be found or read; the message says what was tried and how to fix it."""


def torchvision_weights(arch: str, variant: str = "DEFAULT") -> WeightsEnum:
    """The torchvision weights entry (URL, categories, preprocessing) for an architecture."""
    classifiers = list_models(module=torchvision.models)  # classification models only
    if arch not in classifiers:
        known = ", ".join(sorted(classifiers)[:12])
        raise WeightsError(f"MODEL_ARCH={arch!r} is not a torchvision classification model (for example: {known}, ...).")
    enum = get_model_weights(arch)
    prefix, _, name = variant.rpartition(".")  # "IMAGENET1K_V1" or "ResNet18_Weights.IMAGENET1K_V1"
    try:
        if prefix not in {"", enum.__name__}:
            raise KeyError(prefix)
        return enum[name] if name != "DEFAULT" else enum.DEFAULT
    except KeyError:
        choices = ", ".join(member.name for member in enum)
        raise WeightsError(f"TORCHVISION_WEIGHTS={variant!r} is not a weights entry of {arch} (choose from {choices}).") from None


def cache_path(weights: WeightsEnum) -> Path:
    """Where torch.hub keeps (or would keep) this file: $TORCH_HOME/hub/checkpoints/<name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _missing_message(weights: WeightsEnum, path: Path, reason: str) -> str:
    return (
        f"No weights for {weights!r}: {path} is not in torchvision's cache, and {reason}. "
        f"Fix it in one of two ways: on a machine with internet, fetch {weights.url} and put it at that path "
        f"(or point TORCH_HOME at a directory whose hub/checkpoints/ holds it); "
        f"or set MODEL_WEIGHTS=/path/to/state_dict.pth to serve a local file."
    )


def ensure_cached(weights: WeightsEnum, download: bool = True) -> Path:
    """Make sure the weights file is in the cache, downloading it (hash-checked) if allowed."""
    path = cache_path(weights)
    if path.is_file():
        return path
    if not download:
        raise WeightsError(_missing_message(weights, path, "downloading is switched off (MODEL_DOWNLOAD=0)"))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torch.hub's urlopen would otherwise wait forever
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        hash_prefix = torch.hub.HASH_REGEX.search(path.name)
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix.group(1) if hash_prefix else None, progress=False)
    except Exception as exc:
        raise WeightsError(_missing_message(weights, path, f"downloading it failed ({_reason(exc)})")) from None
    finally:
        socket.setdefaulttimeout(previous)
    return path


def _reason(exc: Exception) -> str:
    """The gist of an exception: its first sentence, without torch's page-long advice."""
    reason = str(getattr(exc, "reason", None) or exc).strip()
    first = reason.splitlines()[0].split(". ")[0] if reason else type(exc).__name__
    return first[:200]


def file_sha256(path: Path) -> str:
    """Hashed once per version of the file: the master checks a cached file's hash, then reports it (model_loader.preload)."""
    stat = path.stat()
    return _sha256(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, inode: int, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def check_cached_hash(path: Path) -> None:
    """torch.hub checks the sha256 prefix in the file's name only when it downloads the file: a file
    copied into the cache by hand (the air-gapped way) is checked here, before it is served."""
    expected = torch.hub.HASH_REGEX.search(path.name)
    if expected is not None and not file_sha256(path).startswith(expected.group(1)):
        raise WeightsError(
            f"The cached weights file {path} is not the file its name promises (its sha256 does not start with "
            f"{expected.group(1)}): it is damaged or another file. Delete it, and fetch it again from the URL torchvision names."
        )


def load_torchvision(weights: WeightsEnum, download: bool = True) -> dict[str, Any]:
    """The state dict, the standard torchvision way (load_state_dict_from_url), its hash checked."""
    path = ensure_cached(weights, download)
    check_cached_hash(path)
    try:
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise WeightsError(f"The cached weights file {path} could not be read ({_reason(exc)}); delete it and start again.") from None


def _unwrap(checkpoint: Any) -> Mapping[str, Any]:
    # Training scripts often save {"model": state_dict, "epoch": ...} or wrap the model in DataParallel.
    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise WeightsError("is not a state dict (a mapping of parameter names to tensors)")
    return {name.removeprefix("module."): tensor for name, tensor in checkpoint.items()}


def _existing_file(path: str | os.PathLike[str]) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsError(f"MODEL_WEIGHTS={str(path)!r}: there is no such file. Point it at a state-dict file (.pth/.pt).")
    return file


def load_local(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A state dict from a local file, read with weights_only=True (no arbitrary pickles)."""
    file = _existing_file(path)
    try:
        return dict(_unwrap(torch.load(file, map_location="cpu", weights_only=True)))
    except WeightsError as exc:
        raise WeightsError(f"MODEL_WEIGHTS={str(path)!r} {exc}.") from None
    except Exception as exc:
        raise WeightsError(
            f"MODEL_WEIGHTS={str(path)!r} could not be read as a weights-only state dict ({_reason(exc)}): "
            "it is corrupt, or a whole pickled model. Save weights with torch.save(model.state_dict(), path)."
        ) from None
