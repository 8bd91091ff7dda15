"""Start the real service the README's way (`make run`) on a free loopback port, and stop it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """The service's own JSON lines, one per request (request_log.py); gunicorn's are plain text."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def master_pid(self) -> int:
        found = re.search(r"Listening at: \S+ \((\d+)\)", self.log())
        assert found, self.log()
        return int(found.group(1))

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM to gunicorn's master: a graceful stop. Returns `make run`'s exit code."""
        if self.process.poll() is None:
            os.kill(self.master_pid(), signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)


def start(log_path: Path, env: Mapping[str, str], workers: int = 2, ready_timeout: float = 90) -> Service:
    port = free_port()
    environment = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": str(workers), **env}
    log = open(log_path, "wb")  # noqa: SIM115 - the child writes to it for its whole life
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"], cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    service = Service(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}:\n{service.log()}")
        try:
            if requests.get(f"{service.url}/health", timeout=2).status_code == 200:
                return service
        except (requests.ConnectionError, requests.Timeout):  # a slow model load keeps the first request queued
            pass
        time.sleep(0.1)
    service.stop()
    raise RuntimeError(f"the service did not become healthy in {ready_timeout}s:\n{service.log()}")


@contextmanager
def running(log_path: Path, env: Mapping[str, str], workers: int = 2) -> Iterator[Service]:
    service = start(log_path, env, workers)
    try:
        yield service
    finally:
        service.stop()


def run_to_exit(env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`make run` expected to refuse to start: its exit code and everything it printed."""
    environment = {**os.environ, "HOST": "127.0.0.1", "PORT": str(free_port()), **env}
    process = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:  # a server that started after all must not outlive the test (make would leave gunicorn behind)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def refused_to_start(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`make run` that must refuse to start: a non-zero exit and no traceback in anything it printed."""
    result = run_to_exit(env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    return result
