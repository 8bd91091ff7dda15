"""Loading the model: labels, weights and architecture, read once by gunicorn's master
(`preload`) and built into a Classifier in each worker (`load_classifier`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

import model_factory
import weights as weights_source
from model import Classifier, ModelLoadError, ModelSpec, release_free_memory

IMAGENET_LABELS = Path(__file__).resolve().parent / "imagenet_classes.txt"


def read_labels(path: str | Path) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ModelLoadError(f"LABELS_FILE={str(path)!r} could not be read ({exc.strerror or exc}).") from None
    except UnicodeDecodeError:
        raise ModelLoadError(f"LABELS_FILE={str(path)!r} is not UTF-8 text: save it as UTF-8, one class name per line.") from None
    labels = [line.strip() for line in lines]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise ModelLoadError(f"LABELS_FILE={str(path)!r} has no labels: put one class name per line.")
    return labels


def _from_factory(spec: ModelSpec, labels: list[str]) -> Classifier:
    assert spec.factory
    try:
        module, preprocess = model_factory.import_factory(spec.factory)()
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"MODEL_FACTORY={spec.factory!r} failed: {type(exc).__name__}: {exc}") from None
    return Classifier(spec, module, preprocess, labels, weights_path=None, weights_origin=f"MODEL_FACTORY={spec.factory}")


@dataclass(frozen=True)
class Preloaded:
    """What gunicorn's master read before forking (`preload`). Every worker it forks, a replacement
    for a crashed one too, is built from this rather than from the files, which may have changed
    since: so all workers serve one model, and a bad file on disk cannot stop a replacement. The
    weights are the master's pages, mapped copy-on-write and never written: one copy for all."""

    spec: ModelSpec
    labels: list[str]
    weights_path: Path | None = None  # None with MODEL_FACTORY: its code runs in each worker
    state_dict: dict[str, torch.Tensor] | None = None
    weights_sha256: str | None = None


_preloaded: Preloaded | None = None


def _channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """A 4-D float tensor in the layout the workers run it in (see Classifier), so that they use it
    as it is; copied by numpy, because the master must not run torch kernels."""
    if tensor.dim() != 4 or tensor.dtype not in {torch.float16, torch.float32, torch.float64}:
        return tensor
    array = np.ascontiguousarray(tensor.numpy().transpose(0, 2, 3, 1))
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def _torchvision_state(spec: ModelSpec, kept: Preloaded | None = None) -> tuple[Any, Path, dict[str, Any]]:
    """The weights entry (preprocessing, URL), the weights file and its state dict."""
    try:
        entry = weights_source.torchvision_weights(spec.arch, spec.torchvision_weights)
        if kept is not None and kept.weights_path is not None and kept.state_dict is not None:
            return entry, kept.weights_path, kept.state_dict
        path = Path(spec.weights_file).expanduser() if spec.weights_file else weights_source.cache_path(entry)
        if spec.weights_file:
            return entry, path, weights_source.load_local(path)
        return entry, path, weights_source.load_torchvision(entry, spec.download)
    except weights_source.WeightsError as exc:
        raise ModelLoadError(str(exc)) from None


def _assign_weights(spec: ModelSpec, num_classes: int, state_dict: dict[str, Any], path: Path) -> torch.nn.Module:
    """The architecture with the weights in place. Built on the meta device and given the loaded
    tensors themselves: no random initialisation, no copy (less memory per worker, and no
    arithmetic, so the gunicorn master can run it to check a configuration)."""
    with torch.device("meta"):
        module = torchvision.models.get_model(spec.arch, weights=None, num_classes=num_classes)
    try:
        module.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"The weights in {path} do not fit {spec.arch} with {num_classes} classes: "
            f"{_first_line(exc)} (a fine-tuned head needs LABELS_FILE with one line per class)."
        ) from None
    return module


def _torchvision_module(spec: ModelSpec, num_classes: int, state_dict: dict[str, Any], path: Path) -> torch.nn.Module:
    module = _assign_weights(spec, num_classes, state_dict, path)
    if any(tensor.is_meta for tensor in [*module.parameters(), *module.buffers()]):  # a buffer the file lacks
        module = torchvision.models.get_model(spec.arch, weights=None, num_classes=num_classes)
        module.load_state_dict(state_dict, strict=True)
    return module


def _from_torchvision(spec: ModelSpec, labels: list[str], kept: Preloaded | None) -> Classifier:
    entry, path, state_dict = _torchvision_state(spec, kept)
    module = _torchvision_module(spec, len(labels), state_dict, path)
    source = "MODEL_WEIGHTS" if spec.weights_file else f"torchvision {entry!r}"
    classifier = Classifier(spec, module, entry.transforms(), labels, weights_path=path, weights_origin=source)
    if kept is not None:
        classifier.weights_sha256 = kept.weights_sha256  # of what the master read, not of the file as it is now
    return classifier


def preload(spec: ModelSpec, check_labels: Callable[[list[str]], None] | None = None) -> None:
    """Check labels and weights and keep them for the workers (see Preloaded), without torch
    compute: safe in gunicorn's master before it forks. A bad configuration is reported once
    instead of by every worker. `check_labels` may refuse the labels read (raising), before they
    are kept. Raises ModelLoadError, and then keeps what it had."""
    global _preloaded
    labels = read_labels(spec.labels_file or IMAGENET_LABELS)
    if check_labels is not None:
        check_labels(labels)
    if spec.factory:
        model_factory.find_module(spec.factory)
        _preloaded = Preloaded(spec, labels)
        return  # the rest is user code, run in each worker: its import may already run torch compute
    _, path, state_dict = _torchvision_state(spec)
    shared = {name: _channels_last(tensor) for name, tensor in state_dict.items()}
    _assign_weights(spec, len(labels), shared, path)
    try:
        sha256 = weights_source.file_sha256(path)
    except OSError as exc:  # replaced or removed since it was read
        raise ModelLoadError(f"The weights file {path} could not be read again to hash it ({exc.strerror or exc}).") from None
    _preloaded = Preloaded(spec, labels, path, shared, sha256)


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:400]


@functools.lru_cache(maxsize=4)
def load_classifier(spec: ModelSpec) -> Classifier:
    """Build the model once per process (per spec); raises ModelLoadError with a readable message."""
    kept = _preloaded if _preloaded is not None and _preloaded.spec == spec else None
    labels = kept.labels if kept is not None else read_labels(spec.labels_file or IMAGENET_LABELS)
    classifier = _from_factory(spec, labels) if spec.factory else _from_torchvision(spec, labels, kept)
    release_free_memory()
    return classifier
