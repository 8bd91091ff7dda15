"""The shipped Postman collection, run by newman against the real server started the README's way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import service
from tests.conftest import Photo
from tests.service import REPO

COLLECTION = REPO / "postman" / "classify.postman_collection.json"
NEWMAN = REPO / "node_modules" / ".bin" / "newman"


def requests_in(collection: dict) -> int:  # type: ignore[type-arg]
    return sum(requests_in(item) if "item" in item else 1 for item in collection["item"])


def require_node() -> None:
    """Skip where node is not installed, except in CI, which must install it (.ci/run), as for Chromium."""
    if shutil.which("node") is not None:
        return
    message = "node is not installed: newman cannot run the Postman collection (apt-get install nodejs npm)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_postman_collection_passes_against_the_real_server(tmp_path: Path, request: pytest.FixtureRequest, photos: list[Photo]) -> None:
    require_node()  # before a server is started for nothing
    assert NEWMAN.exists(), f"{NEWMAN} is missing: run `npm ci` in {REPO} (`make test` does when npm is installed)"
    live_server: service.Service = request.getfixturevalue("live_server")
    report = tmp_path / "newman.json"
    result = subprocess.run(
        [str(NEWMAN), "run", str(COLLECTION), "--env-var", f"baseUrl={live_server.url}",
         "--env-var", f"photo={photos[0].path}", "--env-var", f"photo2={photos[1].path}",
         "--reporters", "cli,json", "--reporter-json-export", str(report), "--color", "off", "--disable-unicode"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "NO_UPDATE_NOTIFIER": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    stats = json.loads(report.read_text())["run"]["stats"]
    assert stats["requests"] == {"total": requests_in(json.loads(COLLECTION.read_text())), "pending": 0, "failed": 0}
    assert stats["assertions"]["failed"] == 0 and stats["assertions"]["total"] >= 3 * stats["requests"]["total"]


def test_every_request_in_the_collection_has_tests_and_uses_base_url() -> None:
    collection = json.loads(COLLECTION.read_text())
    assert {"key": "baseUrl", "value": "http://127.0.0.1:8000"} in collection["variable"]

    def leaves(node: dict) -> list[dict]:  # type: ignore[type-arg]
        return [leaf for item in node["item"] for leaf in (leaves(item) if "item" in item else [item])]

    for request in leaves(collection):
        assert request["request"]["url"]["raw"].startswith("{{baseUrl}}/"), request["name"]
        scripts = [event["script"]["exec"] for event in request.get("event", []) if event["listen"] == "test"]
        assert any("pm.response.to.have.status" in line for script in scripts for line in script), request["name"]
