"""The model: build it once per process, load its weights, preprocess, predict."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms._presets import ImageClassification

import cpu_budget
import weights as weights_source

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
IMAGENET_LABELS = HERE / "imagenet_classes.txt"

Preprocess = Callable[[Image.Image], torch.Tensor]


class ModelLoadError(Exception):
    """The model could not be built; the message is meant for the person starting the server."""


@dataclass(frozen=True)
class ModelSpec:
    """What to serve; hashable so that each process builds a given model only once."""

    arch: str = "resnet18"
    weights_file: str | None = None
    torchvision_weights: str = "DEFAULT"
    download: bool = True
    labels_file: str | None = None
    factory: str | None = None
    precision: str = "fp32"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ModelSpec:
        return cls(
            arch=settings["MODEL_ARCH"],
            weights_file=settings["MODEL_WEIGHTS"],
            torchvision_weights=settings["TORCHVISION_WEIGHTS"],
            download=settings["MODEL_DOWNLOAD"],
            labels_file=settings["LABELS_FILE"],
            factory=settings["MODEL_FACTORY"],
            precision=settings["PRECISION"],
        )


@dataclass
class Prediction:
    label: str
    index: int
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "index": self.index, "probability": round(self.probability, 6)}


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


def set_threads(threads: int) -> None:
    """Torch's intra-op threads for the next forward passes (cheap when unchanged)."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # settable only before the first parallel work
        torch.set_num_interop_threads(1)


def bf16_supported() -> bool:
    """Native bf16 matrix units (AVX512-BF16 or AMX); elsewhere bf16 is emulated and far slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # Once per process: find_library runs ldconfig, and trimming also happens after batch requests.
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them): loading leaves ~40 MB of garbage."""
    with contextlib.suppress(AttributeError):  # not glibc: nothing to trim
        if (libc := _libc()) is not None:
            libc.malloc_trim(0)


def effective_precision(requested: str) -> str:
    if requested == "bf16" and not bf16_supported():
        log.warning("PRECISION=bf16 requested, but this CPU has no native bf16 (AVX512-BF16/AMX): serving fp32")
        return "fp32"
    return requested


class Classifier:
    """A model with its preprocessing and labels, answering top-k predictions for PIL images."""

    def __init__(
        self,
        spec: ModelSpec,
        module: torch.nn.Module,
        preprocess: Preprocess,
        labels: list[str],
        weights_path: Path | None,
        weights_origin: str,
    ) -> None:
        self.spec = spec
        self.weights_origin = weights_origin  # where the weights came from, for GET /model
        self.precision = effective_precision(spec.precision)
        self.module = module.eval().to(memory_format=torch.channels_last)  # oneDNN's fast layout on CPU
        self.preprocess = preprocess
        self.labels = labels
        self.weights_path = weights_path
        self.input_shape = self._warm_up()

    @property
    def name(self) -> str:
        return self.spec.factory or self.spec.arch

    @property
    def architecture(self) -> str:
        return type(self.module).__name__ if self.spec.factory else self.spec.arch

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def decode_min_side(self) -> int:
        """How small a JPEG may be decoded (libjpeg scales by 1/2, 1/4, 1/8): twice the side the
        preprocessing resizes to. Down to exactly that side, top-1 agreement with full-size
        decoding of phone photos fell to 98.5%; at twice it, 99.5% (bench/agreement.py)."""
        side = self.preprocess.resize_size[0] if isinstance(self.preprocess, ImageClassification) else max(self.input_shape[1:])
        return 2 * int(side)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._autocast():
            return self.module(batch.contiguous(memory_format=torch.channels_last)).float()

    def _warm_up(self) -> tuple[int, ...]:
        # One pass at start-up: checks the labels fit the head, and the first user is not the one who waits.
        sample = self.preprocess(Image.new("RGB", (320, 240), (128, 128, 128)))
        outputs = self._forward(sample.unsqueeze(0)).shape[-1]
        if outputs != self.num_classes:
            raise ModelLoadError(
                f"The model outputs {outputs} classes but there are {self.num_classes} labels; "
                "set LABELS_FILE to a file with one line per class, in the model's order."
            )
        return tuple(sample.shape)

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """An RGB image as the model's input: the weights' own preprocessing (resize, crop, normalise)."""
        return self.preprocess(image)  # type: ignore[no-any-return]

    def logits(self, images: Sequence[Image.Image], threads: int | None = None) -> torch.Tensor:
        """Raw model outputs for RGB images, in one batched forward pass, on `threads` CPUs."""
        return self.logits_of(cpu_budget.map_parallel(self.prepare, images, threads or torch.get_num_threads()), threads)

    def logits_of(self, tensors: Sequence[torch.Tensor], threads: int | None = None) -> torch.Tensor:
        """Raw model outputs for prepared images (see prepare)."""
        if threads:
            set_threads(threads)
        if len({tuple(t.shape) for t in tensors}) == 1:
            return self._forward(torch.stack(list(tensors)))
        return torch.cat([self._forward(t.unsqueeze(0)) for t in tensors])  # preprocessing of varying size

    def predict(self, images: Sequence[Image.Image], topk: int, threads: int | None = None) -> list[list[Prediction]]:
        """The top-k classes of each image, highest probability first."""
        return self.top(self.logits(images, threads), topk)

    def top(self, logits: torch.Tensor, topk: int) -> list[list[Prediction]]:
        """The top-k classes of each row of logits, highest probability first."""
        probabilities = logits.softmax(dim=1)
        values, indices = probabilities.topk(min(topk, self.num_classes), dim=1)
        return [
            [Prediction(self.labels[i], i, p) for p, i in zip(row_values.tolist(), row_indices.tolist(), strict=True)]
            for row_values, row_indices in zip(values, indices, strict=True)
        ]

    @functools.cached_property
    def weights_sha256(self) -> str | None:
        if self.weights_path is None:
            return None
        return weights_source.file_sha256(self.weights_path)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "weights": {
                "file": self.weights_path.name if self.weights_path else None,
                "sha256": self.weights_sha256,
                "source": self.weights_origin,
            },
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "preprocessing": describe_preprocess(self.preprocess),
            "precision": self.precision,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        }


def describe_preprocess(preprocess: Preprocess) -> dict[str, Any]:
    if isinstance(preprocess, ImageClassification):
        return {
            "resize": preprocess.resize_size[0],
            "center_crop": preprocess.crop_size[0],
            "interpolation": preprocess.interpolation.value,
            "mean": preprocess.mean,
            "std": preprocess.std,
        }
    return {"description": repr(preprocess)}


def _factory_parts(target: str) -> tuple[str, str]:
    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name:
        raise ModelLoadError(f"MODEL_FACTORY={target!r} must look like package.module:function.")
    return module_name, function_name


def _import_factory(target: str) -> Callable[[], Any]:
    module_name, function_name = _factory_parts(target)
    try:
        return getattr(importlib.import_module(module_name), function_name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"MODEL_FACTORY={target!r} could not be imported ({exc}).") from None


def _find_factory_module(target: str) -> None:
    """A misspelt MODEL_FACTORY module, looked up by the import system's finders without running any
    of its code (importlib.util.find_spec would import the parent packages)."""
    module_name, _ = _factory_parts(target)
    parts = module_name.split(".")
    search: list[str] | None = None  # sys.path for the top-level name, then each package's folders
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        spec = _find_spec(target, name, search)
        if spec is None:
            raise ModelLoadError(f"MODEL_FACTORY={target!r} could not be imported (no module named {name!r}).")
        search = list(spec.submodule_search_locations or [])


def _find_spec(target: str, name: str, search: list[str] | None) -> ModuleSpec | None:
    for finder in sys.meta_path:
        try:
            spec = finder.find_spec(name, search)
        except Exception as exc:
            raise ModelLoadError(f"MODEL_FACTORY={target!r} could not be looked up ({type(exc).__name__}: {exc}).") from None
        if spec is not None:
            return spec
    return None


def _from_factory(spec: ModelSpec, labels: list[str]) -> Classifier:
    assert spec.factory
    try:
        module, preprocess = _import_factory(spec.factory)()
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


def preload(spec: ModelSpec) -> None:
    """Check labels and weights and keep them for the workers (see Preloaded), without torch
    compute: safe in gunicorn's master before it forks. A bad configuration is reported once
    instead of by every worker. Raises ModelLoadError, and then keeps what it had."""
    global _preloaded
    labels = read_labels(spec.labels_file or IMAGENET_LABELS)
    if spec.factory:
        _find_factory_module(spec.factory)
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
