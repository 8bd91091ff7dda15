"""One real server, started the README's way, shared by the browser and Postman tests (a start costs seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import service


@pytest.fixture(scope="package")  # stopped once these tests are done
def live_server(tmp_path_factory: pytest.TempPathFactory, seeded_weights: Path) -> Iterator[service.Service]:
    log = tmp_path_factory.mktemp("live") / "gunicorn.log"
    with service.running(log, {"MODEL_WEIGHTS": str(seeded_weights)}, workers=2) as running:
        yield running
