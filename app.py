"""The application factory: create_app(config=None)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

import api
import demo
import docs
import metrics
import request_id
import request_log
import request_stats
import settings
from cpus import available_cpus
from errors import register_error_handlers
from hardening import harden
from model import ModelSpec, set_threads
from model_loader import load_classifier
from upload import InMemoryRequest


def torch_threads(config: Mapping[str, Any]) -> int:
    """Explicit TORCH_THREADS, else this worker's share of the usable CPUs (the fixed fallback
    when there is no shared CPU budget; under gunicorn cpu_budget adapts it per request)."""
    return config["TORCH_THREADS"] or max(1, available_cpus() // config["WORKERS"])


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app and its model. Raises settings.ConfigError or model.ModelLoadError."""
    app = Flask(__name__)
    app.config.update(settings.load(config))
    app.request_class = InMemoryRequest
    app.json.sort_keys = False  # type: ignore[attr-defined]

    app.extensions["torch_threads"] = torch_threads(app.config)
    set_threads(app.extensions["torch_threads"])
    app.extensions["classifier"] = classifier = load_classifier(ModelSpec.from_settings(app.config))
    settings.check_default_topk(app.config, classifier.num_classes)
    app.config["DEFAULT_TOPK"] = min(app.config["DEFAULT_TOPK"], classifier.num_classes)

    register_error_handlers(app)
    app.register_blueprint(api.bp)
    # Around every request: its id, its clock, its metrics and its one log line.
    request_id.init_app(app)
    request_stats.init_app(app)
    metrics.init_app(app)
    request_log.init_app(app)
    docs.init_app(app)
    app.register_blueprint(demo.bp)
    # Last: the key check runs after the request id and clock are set, so a 401 is logged like any answer.
    harden(app)
    return app
