"""End to end: the real gunicorn started as the README says, real HTTP, then a clean stop."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from cpus import available_cpus
from scripts.procs import children
from tests import service
from tests.conftest import Photo, image_bytes
from tests.hardening import wire


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, seeded_weights: Path) -> Iterator[service.Service]:
    log = tmp_path_factory.mktemp("server") / "gunicorn.log"
    running = service.start(log, {"MODEL_WEIGHTS": str(seeded_weights)}, workers=2)
    yield running
    running.stop()


def test_multipart_upload_over_http(server: service.Service, photos: list[Photo]) -> None:
    with open(photos[0].path, "rb") as file:
        response = requests.post(f"{server.url}/classify", files={"image": file}, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert len(response.json()["predictions"]) == 5


def test_raw_body_over_http(server: service.Service, photos: list[Photo]) -> None:
    response = requests.post(
        f"{server.url}/classify?topk=3", data=photos[1].path.read_bytes(), headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3


def test_several_files_in_one_request_over_http(server: service.Service, photos: list[Photo]) -> None:
    files = [("image", (p.path.name, p.path.read_bytes(), "image/jpeg")) for p in photos[:4]]
    response = requests.post(f"{server.url}/classify", files=files, timeout=30)
    assert [r["filename"] for r in response.json()["results"]] == [p.path.name for p in photos[:4]]


def test_errors_over_http_are_json(server: service.Service) -> None:
    response = requests.post(f"{server.url}/classify", files={"image": ("x.jpg", b"not an image")}, timeout=30)
    assert response.status_code == 415 and response.json()["error"]["code"] == "invalid_image"
    assert requests.get(f"{server.url}/missing", timeout=30).json()["error"]["code"] == "not_found"


def test_concurrent_requests_all_answered_consistently_by_both_workers(server: service.Service, photos: list[Photo]) -> None:
    # 7 photos, each sent 5 times: were the workers to take requests strictly in turn, a photo's
    # sendings would alternate between them (with 8 photos, each would always meet the same worker).
    chosen = photos[:7] * 5

    def classify(number: int) -> tuple[str, str, int]:
        photo, request_id = chosen[number], f"concurrent-{number}"
        response = requests.post(
            f"{server.url}/classify",
            files={"image": (photo.path.name, photo.path.read_bytes())},
            headers={"X-Request-ID": request_id},
            timeout=60,
        )
        assert response.status_code == 200
        return request_id, photo.path.name, response.json()["predictions"][0]["index"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(classify, range(len(chosen))))
    # Which worker answered: the pid in the JSON line request_log.py writes for each request (before
    # the answer is sent, so every line is in the log by now), found by the request's id.
    worker_of = {line["request_id"]: line["pid"] for line in server.log_lines()}
    workers = set(children(server.master_pid()))
    assert len(workers) == 2
    assert {worker_of[request_id] for request_id, _, _ in answers} == workers
    top1s: dict[str, set[int]] = {}
    answered_by: dict[str, set[int]] = {}
    for request_id, name, top1 in answers:
        top1s.setdefault(name, set()).add(top1)
        answered_by.setdefault(name, set()).add(worker_of[request_id])
    assert all(len(top1) == 1 for top1 in top1s.values())  # the same photo, the same answer, whichever worker
    # At least one photo was answered by both, so the line above compares the two workers: each photo
    # is sent 5 times, and 8 concurrent clients keep both workers busy.
    assert any(len(pids) == 2 for pids in answered_by.values()), answered_by


def test_model_endpoint_reports_the_adaptive_thread_policy(server: service.Service) -> None:
    # Two workers: a lone request may use every CPU; with both busy each gets its share.
    body = requests.get(f"{server.url}/model", timeout=30).json()
    cpus = available_cpus()
    assert body["threads"] == {"adaptive": True, "lone_request": cpus, "all_workers_busy": max(1, cpus // 2)}


def test_sigterm_answers_the_requests_already_queued_too_then_exits_cleanly(tmp_path: Path, seeded_weights: Path) -> None:
    # One worker, held by an upload whose body has not all arrived; three more requests wait in the
    # listen queue. They were sent before the stop, so they must be answered, not reset.
    running = service.start(tmp_path / "log", {"MODEL_WEIGHTS": str(seeded_weights)}, workers=1)
    try:
        with wire.held_upload(running.url, 4) as held:
            queued = [socket.create_connection(wire.address(running.url), timeout=30) for _ in range(3)]
            for sock in queued:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)
            os.kill(running.master_pid(), signal.SIGTERM)
            time.sleep(0.5)
            held.sendall(b"\xff\xd9")  # the in-flight upload completes (a broken JPEG: a 415)
            assert wire.parse(wire.read_to_close(held)).status == 415
            assert [wire.parse(wire.read_to_close(sock, tolerate=OSError)).status for sock in queued] == [200, 200, 200]
    finally:
        assert running.stop() == 0
    assert "Shutting down: Master" in running.log()


def test_a_request_past_timeout_is_answered_500_with_its_own_request_id(tmp_path: Path, seeded_weights: Path) -> None:
    # Eight 10000x10000 PNGs, the pixel budget raised for them, take seconds to decode: gunicorn
    # kills the worker at TIMEOUT and answers for it. The caller's id must survive, in the header and the
    # log, and a page on an allowed origin must be able to read the answer.
    page = "http://127.0.0.1:9"
    env = {"MODEL_WEIGHTS": str(seeded_weights), "TIMEOUT": "1", "UPLOAD_TIMEOUT": "0.5", "HEADER_TIMEOUT": "0.5", "CORS_ORIGINS": page}
    huge = image_bytes("1", (10_000, 10_000), "PNG")
    with service.running(tmp_path / "log", {**env, "MAX_REQUEST_PIXELS": str(10**9)}, workers=1) as running:
        files = [("image", (f"{n}.png", huge, "image/png")) for n in range(8)]
        with ThreadPoolExecutor(1) as pool:
            headers = {"X-Request-ID": "slow-1", "Origin": page}
            slow = pool.submit(requests.post, f"{running.url}/classify", files=files, headers=headers, timeout=60)
            time.sleep(0.5)
            queued = requests.get(f"{running.url}/health", headers={"X-Request-ID": "queued-1"}, timeout=60)  # behind it
            answer = slow.result()
        assert (answer.status_code, answer.json()["error"]["code"]) == (500, "internal_error")
        assert answer.headers["X-Request-ID"] == "slow-1"
        assert answer.headers["Access-Control-Allow-Origin"] == page
        assert answer.headers["Access-Control-Expose-Headers"] == "X-Request-ID"
        lines = {line["request_id"]: line for line in running.log_lines()}
        assert lines["slow-1"]["status"] == 500
        # The aborted worker leaves: the queued request is its replacement's, not one more for it.
        assert queued.status_code == 200 and lines["queued-1"]["pid"] != lines["slow-1"]["pid"]
        # One line says so, not a 70-line traceback at ERROR that alerting would take for a bug.
        assert "Traceback" not in running.log()
        assert "Request POST /classify ran past TIMEOUT=1s: answered 500" in running.log()
        # It exits then, not once its decoding threads are done: the master killed it first, as if out of memory.
        assert "SIGKILL" not in running.log()


@pytest.mark.parametrize(
    "env",
    [
        {"MODEL_WEIGHTS": "/nonexistent/resnet18.pth"},
        {"MODEL_WEIGHTS": "", "MODEL_DOWNLOAD": "0"},  # TORCH_HOME set to an empty folder below
        {"MODEL_WEIGHTS": "__garbage__"},
        {"MODEL_WEIGHTS": "__resnet18__", "MODEL_ARCH": "resnet34"},
    ],
    ids=["missing-file", "empty-cache-offline", "not-a-state-dict", "weights-of-another-architecture"],
)
def test_without_usable_weights_the_server_refuses_to_start_with_a_clear_message(
    tmp_path: Path, seeded_weights: Path, env: dict[str, str]
) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    env = {key: value.replace("__garbage__", str(garbage)).replace("__resnet18__", str(seeded_weights)) for key, value in env.items()}
    result = service.refused_to_start({**env, "TORCH_HOME": str(tmp_path / "torch-home")})
    output = result.stdout + result.stderr
    assert output.count("classify: cannot start:") == 1  # said once, by the master, before any worker
    assert "MODEL_WEIGHTS" in output or "do not fit" in output


def test_a_port_already_taken_refuses_to_start_in_one_line_without_retrying(seeded_weights: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = service.refused_to_start({"MODEL_WEIGHTS": str(seeded_weights), "PORT": str(port)})
    assert f"classify: cannot start: PORT={port} cannot be opened on HOST=127.0.0.1: Address already in use." in result.stderr
    assert "Retrying" not in result.stderr


def test_the_address_checked_at_start_is_the_one_gunicorn_binds(seeded_weights: Path) -> None:
    # A --bind in GUNICORN_CMD_ARGS wins over HOST and PORT: that port is the one checked, and named.
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = service.refused_to_start({"MODEL_WEIGHTS": str(seeded_weights), "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}"})
    assert f"classify: cannot start: PORT={port} cannot be opened on HOST=127.0.0.1: Address already in use." in result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY='0'"),
        ({"TIMEOUT": "abc"}, "TIMEOUT='abc'"),
        ({"TIMEOUT": "5"}, "UPLOAD_TIMEOUT=10 must be less than TIMEOUT=5"),  # the worker would die first: a 500
        ({"HEADER_TIMEOUT": "inf"}, "HEADER_TIMEOUT='inf'"),
        ({"API_KEYS": " , ,"}, "API_KEYS=' , ,'"),  # silently no keys, so no authentication, before
        ({"PROMETHEUS_MULTIPROC_DIR": "/proc/no-such-folder"}, "PROMETHEUS_MULTIPROC_DIR='/proc/no-such-folder' cannot be used"),
        ({"GUNICORN_CMD_ARGS": "--timeout 4"}, "UPLOAD_TIMEOUT=10 must be less than TIMEOUT=4"),  # gunicorn's own way to set it
        ({"DEFAULT_TOPK": "1001"}, "DEFAULT_TOPK=1001 is more than the model's 1000 classes."),
        ({"HOST": "999.1.1.1"}, "HOST=999.1.1.1 cannot be used: "),  # gunicorn retried it five times
        ({"HOST": "192.0.2.1"}, "HOST=192.0.2.1 cannot be used: no interface of this machine has it."),
    ],
    ids=[
        "no workers",
        "timeout not a number",
        "upload deadline past the timeout",
        "infinite deadline",
        "keys that name nothing",
        "unusable metrics folder",
        "timeout given on gunicorn's command line",
        "more classes asked for than the model has",
        "no such host",
        "not this machine's address",
    ],
)
def test_unusable_server_settings_refuse_to_start_in_one_line(seeded_weights: Path, env: dict[str, str], named: str) -> None:
    result = service.refused_to_start({"MODEL_WEIGHTS": str(seeded_weights), **env})
    assert f"classify: cannot start: {named}" in result.stdout + result.stderr


def test_a_binary_upgrade_with_usr2_hands_over_the_health_port_and_the_metrics(tmp_path: Path, seeded_weights: Path) -> None:
    # gunicorn's way to deploy code (README): SIGUSR2 starts a new master beside the old, then the old
    # one is stopped. The new master could not open the health port the old one held, and emptied the
    # old master's metrics folder, which the old one then removed: /metrics failed from then on.
    health = service.free_port()
    running = service.start(tmp_path / "log", {"MODEL_WEIGHTS": str(seeded_weights), "HEALTH_PORT": str(health)}, workers=1)
    old, new = running.master_pid(), None
    try:
        os.kill(old, signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while new is None and time.monotonic() < deadline:
            new = next((int(pid) for pid in re.findall(r"Listening at: \S+ \((\d+)\)", running.log()) if int(pid) != old), None)
            time.sleep(0.2)
        assert new is not None, running.log()
        while time.monotonic() < deadline and "Booting worker" not in running.log().split(f"({new})", 1)[-1]:
            time.sleep(0.2)
        os.kill(old, signal.SIGTERM)
        running.process.wait(60)
        assert requests.get(f"{running.url}/health", timeout=30).status_code == 200
        assert requests.get(f"http://127.0.0.1:{health}/health", timeout=30).status_code == 200
        photo = image_bytes("RGB", (64, 48), "PNG")
        assert requests.post(f"{running.url}/classify", data=photo, headers={"Content-Type": "image/png"}, timeout=30).ok
        metrics = requests.get(f"{running.url}/metrics", timeout=30)
        assert metrics.status_code == 200 and "classify_images_classified_total 1.0" in metrics.text, metrics.text[-2000:]
        assert "cannot start" not in running.log()
    finally:
        if new is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(new, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and Path(f"/proc/{new}").exists():
                time.sleep(0.2)
        running.stop()
