"""What one request did, noted by the views and read by the metrics and the request log."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flask import Flask, g, request


@dataclass
class RequestStats:
    started: float = field(default_factory=time.perf_counter)
    images: int = 0  # files received in the request
    upload_bytes: int = 0  # their bytes, as uploaded
    classified: int = 0  # images that went through the model
    rejected: list[str] = field(default_factory=list)  # error codes of the files refused
    inference_seconds: float | None = None  # the forward pass of the batch (preprocessing is counted with decoding)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def current() -> RequestStats:
    """This request's stats, created on first use."""
    if "request_stats" not in g:
        g.request_stats = RequestStats()
    return g.request_stats  # type: ignore[no-any-return]


def route() -> str | None:
    """The matched URL rule (bounded cardinality, unlike the path); None for unknown paths."""
    return request.url_rule.rule if request.url_rule else None


def _begin() -> None:
    current()  # the clock starts before any view runs


def init_app(app: Flask) -> None:
    app.before_request(_begin)
