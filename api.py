"""The HTTP API: POST /classify, GET /health, GET /model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from flask import Blueprint, Response, current_app, jsonify, request

import cpu_budget
import request_stats
from errors import APIError
from images import decode_image, pixels_to_decode
from model import Classifier, release_free_memory
from upload import Upload, read_topk, read_uploads, refuse_encoded_body

bp = Blueprint("api", __name__)


def classifier() -> Classifier:
    return current_app.extensions["classifier"]  # type: ignore[no-any-return]


@contextmanager
def threads_for_next_step() -> Iterator[int]:
    """Torch threads for the next step: TORCH_THREADS if pinned, else this request's CPU plus
    the CPUs no other worker is using right now (cpu_budget.py)."""
    pinned = current_app.config["TORCH_THREADS"]
    if pinned:
        yield pinned
        return
    with cpu_budget.borrow(default=current_app.extensions["torch_threads"]) as threads:
        yield threads


@dataclass
class Prepared:
    """An upload decoded and reduced to the model's input at once, so that a request never holds
    more full-size pictures than it decodes at a time: MAX_FILES pictures of MAX_IMAGE_PIXELS each,
    all decoded before the first was prepared, would not fit in a worker's memory."""

    width: int  # as uploaded, after EXIF orientation
    height: int
    format: str
    tensor: torch.Tensor


def _check_request_pixels(uploads: list[Upload], max_pixels: int, min_side: int | None) -> None:
    # Each image is within MAX_IMAGE_PIXELS, but 32 of them, a few MB of PNG, would take minutes
    # to decode: past TIMEOUT, the worker would be killed mid-request and the client get a 500.
    budget = current_app.config["MAX_REQUEST_PIXELS"]
    total = sum(pixels_to_decode(upload.data, max_pixels, min_side) for upload in uploads)
    if total > budget:
        raise APIError(
            413,
            "too_many_pixels",
            f"The {len(uploads)} images have {total:,} pixels to decode together; at most {budget:,} are decoded "
            "for one request. Send them in several requests.",
        )


def _prepare_all(uploads: list[Upload], model: Classifier) -> list[Prepared | APIError]:
    max_pixels = current_app.config["MAX_IMAGE_PIXELS"]
    min_side = model.decode_min_side if current_app.config["REDUCED_DECODE"] else None

    def prepare(upload: Upload) -> Prepared | APIError:
        try:
            decoded = decode_image(upload.data, max_pixels, min_side)
        except APIError as error:
            return error
        return Prepared(decoded.width, decoded.height, decoded.format, model.prepare(decoded.image))

    if len(uploads) == 1:  # bounded by MAX_IMAGE_PIXELS alone
        return [prepare(uploads[0])]
    _check_request_pixels(uploads, max_pixels, min_side)
    with threads_for_next_step() as threads:
        return cpu_budget.map_parallel(prepare, uploads, threads)


def _entry(upload: Upload, outcome: Prepared | APIError, predictions: list[Any] | None) -> dict[str, Any]:
    if isinstance(outcome, APIError):
        return {"filename": upload.filename, "error": outcome.to_dict()}
    return {
        "filename": upload.filename,
        "predictions": [p.to_dict() for p in predictions or []],
        "image": {"width": outcome.width, "height": outcome.height, "format": outcome.format},
    }


def _note_received(uploads: list[Upload]) -> None:
    """For the metrics and the request log, also when the request is refused as a whole (a 413)."""
    stats = request_stats.current()
    stats.images = len(uploads)
    stats.upload_bytes = sum(len(upload.data) for upload in uploads)


def _note(prepared: list[Prepared | APIError], inference_seconds: float | None) -> None:
    """For the metrics and the request log."""
    stats = request_stats.current()
    stats.classified = sum(isinstance(p, Prepared) for p in prepared)
    stats.rejected = [p.code for p in prepared if isinstance(p, APIError)]
    stats.inference_seconds = inference_seconds


@bp.post("/classify", strict_slashes=False)  # /classify/ too: a slip that should not be a 404
def classify() -> Response | tuple[Response, int]:
    with cpu_budget.in_flight():
        return _classify()


def _classify() -> Response | tuple[Response, int]:
    started = time.perf_counter()
    model = classifier()
    refuse_encoded_body(request)
    topk = read_topk(request, current_app.config["DEFAULT_TOPK"], model.num_classes)
    uploads = read_uploads(request, current_app.config["MAX_FILES"])
    _note_received(uploads)

    with cpu_budget.cpu():
        decoding = time.perf_counter()  # not before: the upload's arrival, or the wait for a CPU, is not decoding
        prepared = _prepare_all(uploads, model)
        decoded_at = time.perf_counter()
        good = [p for p in prepared if isinstance(p, Prepared)]
        with threads_for_next_step() as threads:
            predictions = iter(model.top(model.logits_of([p.tensor for p in good], threads), topk) if good else [])
    finished = time.perf_counter()
    _note(prepared, finished - decoded_at if good else None)

    entries = [_entry(u, d, None if isinstance(d, APIError) else next(predictions)) for u, d in zip(uploads, prepared, strict=True)]
    timing = {
        "decode": round((decoded_at - decoding) * 1000, 2),
        "model": round((finished - decoded_at) * 1000, 2),
        "total": round((finished - started) * 1000, 2),
    }
    if len(entries) == 1:
        if isinstance(prepared[0], APIError):
            raise prepared[0]
        return jsonify(**entries[0], model=model.name, timing_ms=timing)
    body = jsonify(results=entries, model=model.name, timing_ms=timing)
    if len(good) > 1:
        # A batch's forward pass takes memory in proportion to its size, which the allocator would
        # keep for good; hand it back once the answer is sent (measured in BENCHMARKS.md).
        body.call_on_close(release_free_memory)
    if not good:  # every file failed: the request as a whole failed, for the first file's reason
        first = next(p for p in prepared if isinstance(p, APIError))
        body = jsonify(error=first.to_dict(), results=entries)
        return body, first.status
    return body


@bp.get("/health")
def health() -> Response:
    # A worker only serves once create_app() has built its model, so answering means ready.
    return jsonify(status="ok", model=classifier().name)


@bp.get("/model")
def model_info() -> Response:
    config = current_app.config
    limits = {
        "max_upload_bytes": config["MAX_CONTENT_LENGTH"],
        "max_image_pixels": config["MAX_IMAGE_PIXELS"],
        "max_request_pixels": config["MAX_REQUEST_PIXELS"],
        "max_files": config["MAX_FILES"],
        "default_topk": config["DEFAULT_TOPK"],
    }
    return jsonify(**classifier().describe(), threads=_thread_policy(), limits=limits)


def _thread_policy() -> dict[str, Any]:
    config = current_app.config
    share = current_app.extensions["torch_threads"]
    if config["TORCH_THREADS"] or not cpu_budget.shared():
        return {"adaptive": False, "per_request": share}
    return {"adaptive": True, "lone_request": cpu_budget.threads_when_alone(), "all_workers_busy": share}
