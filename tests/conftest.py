"""Shared fixtures: real seeded weights, the real shared photos, an app and its test client."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from werkzeug.test import TestResponse

import settings
from app import create_app
from model_loader import load_classifier
from tests.service import REPO

SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))
SAMPLES = SHARED / "images" / "imagenet-samples"


# The settings gunicorn.conf.py reads itself, beside settings.ENVIRONMENT.
GUNICORN_VARIABLES = ("HOST", "PORT", "HEALTH_PORT", "WEB_CONCURRENCY", "TIMEOUT", "GRACEFUL_TIMEOUT", "PROMETHEUS_MULTIPROC_DIR")
SERVICE_VARIABLES = [*settings.ENVIRONMENT, *GUNICORN_VARIABLES, "GUNICORN_CMD_ARGS"]


@pytest.fixture
def fresh_classifier_cache() -> Iterator[None]:
    """model_loader.load_classifier builds each spec once per process: for a test whose spec means something
    else under its patches, no classifier from before it, and none left for after."""
    load_classifier.cache_clear()
    yield
    load_classifier.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def no_service_settings_from_the_shell() -> Iterator[None]:
    """The service's settings a developer's shell may export (API_KEYS, MAX_FILES, PORT, ...): no
    test may depend on them. A test that wants one sets it."""
    with pytest.MonkeyPatch.context() as patch:
        for name in SERVICE_VARIABLES:
            patch.delenv(name, raising=False)
        yield


@dataclass(frozen=True)
class Photo:
    path: Path
    class_index: int
    category: str


def shared_photos() -> list[Photo]:
    with open(SAMPLES / "labels.csv", newline="") as file:
        return [Photo(SAMPLES / row["file"], int(row["class_index"]), row["category"]) for row in csv.DictReader(file)]


@pytest.fixture(scope="session")
def photos() -> list[Photo]:
    found = shared_photos()
    assert len(found) == 200, f"expected the 200 shared photos in {SAMPLES}"
    return found


@pytest.fixture(scope="session")
def jpeg(photos: list[Photo]) -> bytes:
    """The bytes of the first shared photo, a JPEG."""
    return photos[0].path.read_bytes()


@pytest.fixture(scope="session")
def seeded_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real resnet18 state dict with seeded random weights: same file, same numbers, anywhere."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18-seeded.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture
def app(seeded_weights: Path) -> Flask:
    return create_app({"TESTING": True, "MODEL_WEIGHTS": str(seeded_weights)})


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as client:
        yield client


def image_bytes(mode: str = "RGB", size: tuple[int, int] = (64, 48), fmt: str = "PNG", color: Any = None, **save: Any) -> bytes:
    """A small generated image, encoded in memory."""
    if color is None:
        color = {"1": 1, "L": 128, "I;16": 40000, "I": 40000, "F": 0.5}.get(mode, (200, 100, 50, 255)[: len(mode)])
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def upload(client: FlaskClient, *files: tuple[str, bytes, str], query: str = "", **form: str) -> TestResponse:
    """POST /classify as multipart: each file as (field, content, filename), `form` as text fields."""
    data: dict[str, Any] = dict(form)
    for field, content, name in files:
        data.setdefault(field, []).append((io.BytesIO(content), name))
    return client.post(f"/classify{query}", data=data, content_type="multipart/form-data")
