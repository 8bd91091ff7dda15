"""Fixtures for the hardening tests: an app and a real server with small limits, keys and CORS on.

One server for the whole session (starting one costs seconds): the corpus, the property tests,
the transport tests and the short load all run against it, and check it lost no worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from tests import service
from tests.hardening.corpus import LIMITS, MAX_BYTES, MAX_FILES

API_KEY = "test-key-0123456789abcdef"
ORIGIN = "https://app.example.com"
TIMEOUTS = {"UPLOAD_TIMEOUT": "2", "HEADER_TIMEOUT": "2"}


@pytest.fixture(scope="session")
def hardened_app(seeded_weights: Path) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "MODEL_WEIGHTS": str(seeded_weights),
            "MAX_CONTENT_LENGTH": MAX_BYTES,
            "MAX_FILES": MAX_FILES,
            "API_KEYS": [API_KEY],
            "CORS_ORIGINS": [ORIGIN],
            "UPLOAD_TIMEOUT": float(TIMEOUTS["UPLOAD_TIMEOUT"]),
        }
    )


@pytest.fixture
def hardened_client(hardened_app: Flask) -> Iterator[FlaskClient]:
    with hardened_app.test_client() as client:
        yield client


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, seeded_weights: Path) -> Iterator[service.Service]:
    """The real server (`make run`, two workers) with the same limits, keys and CORS as hardened_app."""
    env = {"MODEL_WEIGHTS": str(seeded_weights), "API_KEYS": API_KEY, "CORS_ORIGINS": ORIGIN, **LIMITS, **TIMEOUTS}
    running = service.start(tmp_path_factory.mktemp("live") / "gunicorn.log", env, workers=2)
    yield running
    running.stop()


GONE_WORKER_SIGNS = ("WORKER TIMEOUT", "exited with code", "was sent SIGKILL", "Worker exiting")


@pytest.fixture(scope="module")
def watch_workers(live: service.Service) -> Iterator[None]:
    """Around a module: the live server keeps the same workers, and its log shows none dying."""
    from scripts.procs import children

    before = children(live.master_pid())
    log_start = len(live.log())
    yield
    assert children(live.master_pid()) == before, "a worker died and was replaced"
    new_log = live.log()[log_start:]
    assert not [sign for sign in GONE_WORKER_SIGNS if sign in new_log], new_log[-3000:]
