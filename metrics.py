"""GET /metrics: Prometheus text format, summed over every gunicorn worker.

Under gunicorn the master sets PROMETHEUS_MULTIPROC_DIR before any worker starts (see
metrics_multiprocess.py), so prometheus_client keeps each worker's values in files there and a
scrape, whichever worker answers it, adds them all up. Without it (tests, `flask run`) the
values live in this process.
"""

from __future__ import annotations

import os

import torch
import torchvision
from flask import Blueprint, Flask, Response, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

import request_stats
from model import Classifier

bp = Blueprint("metrics", __name__)

# Client-chosen text never becomes a label value unbounded: routes are URL rules, methods a fixed set.
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
UNMATCHED = "unmatched"  # unknown paths and wrong methods
UNPARSED = "unparsed"  # requests gunicorn refused before the app saw them (gunicorn_errors.py)
ABORTED = "aborted"  # requests the app began but did not answer, so gunicorn did: a worker timeout

REQUESTS = Counter("classify_http_requests", "HTTP requests answered, by method, route and status.", ["method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "classify_http_request_duration_seconds",
    "Time from the request reaching the app to its response, by method and route.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INFERENCE_SECONDS = Histogram(
    "classify_inference_duration_seconds",
    "Forward pass of one request's batch of images.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IMAGES_CLASSIFIED = Counter("classify_images_classified", "Images that went through the model.")
IMAGES_REJECTED = Counter("classify_images_rejected", "Uploaded files refused, by error code.", ["code"])
UPLOAD_BYTES = Histogram(
    "classify_upload_bytes",
    "Bytes of the image files in one classify request.",
    buckets=(10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 20_000_000),
)
MODEL_INFO = Gauge(
    "classify_model_info",
    "The model this service runs; always 1.",
    ["name", "architecture", "weights_file", "precision", "torch", "torchvision"],
    # Live workers only, and one series for all of them (they serve the same model), not one per worker.
    multiprocess_mode="livemax",
)


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()  # a fresh one per scrape, as prometheus_client's multiprocess docs say
    multiprocess.MultiProcessCollector(registry)
    return registry


def _model_labels(classifier: Classifier) -> dict[str, str]:
    # Not the weights' sha256 (see GET /model): hashing the file would slow every worker's start.
    return {
        "name": classifier.name,
        "architecture": classifier.architecture,
        "weights_file": classifier.weights_path.name if classifier.weights_path else "",
        "precision": classifier.precision,  # what runs, after falling back from bf16 where unsupported
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


def _method_label(method: str | None) -> str:
    return method if method is not None and method in METHODS else "other"


def _observe(response: Response) -> Response:
    stats = request_stats.current()
    method = _method_label(request.method)
    route = request_stats.route() or UNMATCHED
    REQUESTS.labels(method, route, str(response.status_code)).inc()
    REQUEST_SECONDS.labels(method, route).observe(stats.elapsed())
    if stats.images:
        UPLOAD_BYTES.observe(stats.upload_bytes)
    if stats.inference_seconds is not None:
        INFERENCE_SECONDS.observe(stats.inference_seconds)
        IMAGES_CLASSIFIED.inc(stats.classified)
    for code in stats.rejected:
        IMAGES_REJECTED.labels(code).inc()
    return response


def count_server_answer(status: int, method: str | None) -> None:
    """An answer gunicorn wrote itself (gunicorn_errors.py); `method` as far as it parsed the request."""
    route = ABORTED if method is not None and status >= 500 else UNPARSED
    REQUESTS.labels(_method_label(method), route, str(status)).inc()


def init_app(app: Flask) -> None:
    """Count every request and serve /metrics; call once the model is loaded."""
    MODEL_INFO.labels(**_model_labels(app.extensions["classifier"])).set(1)
    app.after_request(_observe)
    app.register_blueprint(bp)
