"""HEALTH_PORT: /health on a port of its own, answered even while every worker is busy."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import health_port
from scripts import procs
from tests import service
from tests.hardening import wire


@pytest.fixture(scope="module")
def health_port_number() -> int:
    return service.free_port()


@pytest.fixture(scope="module")
def health_url(server: service.Service, health_port_number: int) -> str:  # the port of that server
    return f"http://127.0.0.1:{health_port_number}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, seeded_weights: Path, health_port_number: int) -> Iterator[service.Service]:
    env = {"MODEL_WEIGHTS": str(seeded_weights), "HEALTH_PORT": str(health_port_number)}
    running = service.start(tmp_path_factory.mktemp("health") / "gunicorn.log", env, workers=1)
    yield running
    running.stop()  # idempotent: the 503 test stops it already


def test_the_health_port_answers_while_the_only_worker_is_busy(server: service.Service, health_url: str) -> None:
    with wire.held_upload(server.url, 100_000):
        with pytest.raises(requests.Timeout):  # the main port's /health queues behind the upload
            requests.get(f"{server.url}/health", timeout=1.5)
        answer = requests.get(f"{health_url}/health", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "model": "resnet18"}
    assert answer.headers["Content-Type"] == "application/json"


def test_the_health_port_serves_only_get_and_head_of_health_as_json(server: service.Service, health_url: str) -> None:
    head = requests.head(f"{health_url}/health", timeout=5)
    assert (head.status_code, head.content) == (200, b"")
    missing = requests.get(f"{health_url}/classify", timeout=5)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    posted = requests.post(f"{health_url}/health", data=b"x", timeout=5)
    assert (posted.status_code, posted.json()["error"]["code"]) == (405, "method_not_allowed")
    assert posted.headers["Allow"] == "GET, HEAD"
    garbled = wire.exchange(health_url, b"NOT HTTP AT ALL\r\n\r\n", timeout=5)
    assert (garbled.status, garbled.error_code) == (400, "bad_request")


def test_the_health_port_holds_a_bounded_number_of_probes_at_once(server: service.Service, health_url: str) -> None:
    # Each connection that keeps silent holds a thread of the worker: without a bound, 1300 such took
    # it past 1024 open descriptors, and its main port then crashed it.
    (worker,) = procs.children(server.master_pid())
    silent = [socket.create_connection(wire.address(health_url), timeout=5) for _ in range(2 * health_port.MAX_PROBES)]
    try:
        time.sleep(1)
        status = Path(f"/proc/{worker}/status").read_text().splitlines()
        threads = int(next(line.split()[1] for line in status if line.startswith("Threads:")))
        assert threads < health_port.MAX_PROBES + 16  # the probes', and the worker's own (torch, decoding)
    finally:
        for sock in silent:
            sock.close()
    assert requests.get(f"{health_url}/health", timeout=10).status_code == 200


def test_the_health_port_says_503_while_a_stopping_worker_finishes_its_request(server: service.Service, health_url: str) -> None:
    with wire.held_upload(server.url, 100_000):
        os.kill(server.master_pid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (answer := requests.get(f"{health_url}/health", timeout=5)).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answer.status_code == 503
        assert answer.json()["status"] == "stopping"
    assert server.stop() == 0


def test_a_health_port_that_is_the_main_port_refuses_to_start(seeded_weights: Path) -> None:
    port = str(service.free_port())
    result = service.refused_to_start({"MODEL_WEIGHTS": str(seeded_weights), "PORT": port, "HEALTH_PORT": port})
    assert f"classify: cannot start: HEALTH_PORT={port} must differ from PORT." in result.stderr


def test_a_health_port_already_taken_refuses_to_start_in_one_line(seeded_weights: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = service.refused_to_start({"MODEL_WEIGHTS": str(seeded_weights), "HEALTH_PORT": str(port)})
    assert f"classify: cannot start: HEALTH_PORT={port} cannot be opened on 127.0.0.1: Address already in use." in result.stderr


def test_a_health_port_on_every_ipv6_address_takes_ipv4_probes_too() -> None:
    # HOST=:: serves IPv4 on the main port (gunicorn's socket); a probe to the pod's IPv4 address must reach this one too.
    with health_port.open_listener("::", 0) as listener:
        port = listener.getsockname()[1]
        for address in ("127.0.0.1", "::1"):
            socket.create_connection((address, port), timeout=5).close()
