"""Metrics and request logs from the real server: gunicorn with two workers, started by `make run`."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import service
from tests.conftest import Photo
from tests.hardening import wire
from tests.prometheus_text import sample

N = 16  # classify requests, sent 8 at a time so that both workers serve some


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, seeded_weights: Path) -> Iterator[service.Service]:
    env = {"MODEL_WEIGHTS": str(seeded_weights), "PROMETHEUS_MULTIPROC_DIR": ""}  # the master makes its own folder
    running = service.start(tmp_path_factory.mktemp("ops") / "gunicorn.log", env, workers=2)
    yield running
    running.stop()  # idempotent: the last test stops it already


@pytest.fixture(scope="module")
def metrics_folder(server: service.Service) -> Path:
    return Path(re.search(r"Metrics folder: (\S+)", server.log()).group(1))  # type: ignore[union-attr]


def generated_id_line(server: service.Service, generated: str) -> dict[str, Any]:
    """The log line of a request whose id the service made up (32 hex digits), once it is written."""
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    deadline = time.monotonic() + 5
    while generated not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    return next(line for line in server.log_lines() if line["request_id"] == generated)


def scrape(server: service.Service) -> str:
    response = requests.get(f"{server.url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.text


@pytest.fixture(scope="module")
def classified(server: service.Service, photos: list[Photo]) -> list[requests.Response]:
    """N classify requests, sent concurrently, each with its own request id."""

    def classify(number: int) -> requests.Response:
        photo = photos[number % 8]
        headers = {"X-Request-ID": f"ops-test-{number}"}
        return requests.post(
            f"{server.url}/classify", files={"image": (photo.path.name, photo.path.read_bytes())}, headers=headers, timeout=60
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(classify, range(N)))
    assert all(r.status_code == 200 for r in responses)
    return responses


def test_both_workers_served_the_requests(server: service.Service, classified: list[requests.Response]) -> None:
    pids = {line["pid"] for line in server.log_lines() if line["route"] == "/classify"}
    assert len(pids) == 2


def test_metrics_after_n_requests_across_two_workers_count_exactly_n(
    server: service.Service, classified: list[requests.Response], photos: list[Photo]
) -> None:
    text = scrape(server)  # whichever worker answers, it reports both workers' counts
    assert sample(text, "classify_http_requests_total", method="POST", route="/classify", status="200") == N
    assert sample(text, "classify_http_request_duration_seconds_count", method="POST", route="/classify") == N
    assert sample(text, "classify_inference_duration_seconds_count") == N
    assert sample(text, "classify_images_classified_total") == N
    assert sample(text, "classify_upload_bytes_count") == N
    assert sample(text, "classify_upload_bytes_sum") == sum(photos[i % 8].path.stat().st_size for i in range(N))
    assert 'classify_model_info{architecture="resnet18"' in text


def test_every_scrape_agrees_whichever_worker_answers(server: service.Service, classified: list[requests.Response]) -> None:
    counts = {sample(scrape(server), "classify_http_requests_total", method="POST", route="/classify", status="200") for _ in range(6)}
    assert counts == {N}


def test_each_request_is_one_json_log_line_with_its_id(server: service.Service, classified: list[requests.Response]) -> None:
    log = server.log()
    for number, response in enumerate(classified):
        assert response.headers["X-Request-ID"] == f"ops-test-{number}"
        assert log.count(f'"ops-test-{number}"') == 1  # one line per request: gunicorn's own access log is off
    line = next(line for line in server.log_lines() if line["request_id"] == "ops-test-0")
    assert set(line) >= {"time", "request_id", "method", "route", "status", "latency_ms", "images", "request_bytes", "pid"}
    assert (line["method"], line["route"], line["status"], line["images"]) == ("POST", "/classify", 200, 1)
    assert line["latency_ms"] > 0 and line["request_bytes"] > 0


def test_a_request_without_an_id_gets_one_generated_in_header_and_log(server: service.Service) -> None:
    response = requests.get(f"{server.url}/nowhere", timeout=30)
    assert response.status_code == 404
    line = generated_id_line(server, response.headers["X-Request-ID"])
    assert (line["route"], line["path"], line["status"]) == (None, "/nowhere", 404)


def test_a_request_gunicorn_refuses_is_answered_logged_and_counted_like_the_apps_own(server: service.Service) -> None:
    # Non-ASCII bytes in the request line (curl sends them as typed): gunicorn refuses it before the app.
    before = sample(scrape(server), "classify_http_requests_total", method="other", route="unparsed", status="400")
    typed = "topk=\N{FULLWIDTH DIGIT THREE}"
    answer = wire.exchange(server.url, f"POST /classify?{typed} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    assert (answer.status, answer.error_code) == (400, "bad_request")
    # The bytes sent, escaped, rather than read as latin-1 (which gave "ï¼" and a control character).
    assert "topk=\\xef\\xbc\\x93" in answer.json()["error"]["message"]
    line = generated_id_line(server, answer.headers["x-request-id"])
    assert (line["method"], line["path"], line["status"], line["remote_addr"]) == (None, None, 400, "127.0.0.1")
    after = sample(scrape(server), "classify_http_requests_total", method="other", route="unparsed", status="400")
    assert after == before + 1


def test_a_replaced_worker_keeps_its_counts_and_loses_its_live_gauges(
    server: service.Service, metrics_folder: Path, classified: list[requests.Response]
) -> None:
    before = scrape(server)
    worker = next(line["pid"] for line in server.log_lines() if line["route"] == "/classify")
    assert list(metrics_folder.glob(f"gauge_live*_{worker}.db"))  # its classify_model_info
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while server.log().count("Booting worker") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"Worker (pid:{worker})" in server.log()
    assert not list(metrics_folder.glob(f"gauge_live*_{worker}.db"))  # the master's child_exit hook removed them
    for _ in range(4):
        assert requests.get(f"{server.url}/health", timeout=60).status_code == 200
    after = scrape(server)
    assert sample(after, "classify_http_requests_total", method="POST", route="/classify", status="200") == N
    assert sample(before, "classify_images_classified_total") == N  # counted at all, so equal below is not 0 == 0
    assert sample(after, "classify_images_classified_total") == N


def test_stopping_the_server_removes_the_metrics_folder_it_made(server: service.Service, metrics_folder: Path) -> None:
    # Last in this module: it stops the shared server.
    assert list(metrics_folder.glob("counter_*.db"))
    assert server.stop() == 0
    assert not metrics_folder.exists()
