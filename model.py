"""The model as it runs in a worker: preprocessing, the forward pass, top-k predictions.

model_loader.py builds it from the files (and MODEL_FACTORY, model_factory.py)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image
from torchvision.transforms._presets import ImageClassification

import cpu_budget
import weights as weights_source

log = logging.getLogger(__name__)

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
