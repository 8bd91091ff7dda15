"""Fault scenarios against a running service: signals under load, and slow clients.

Each returns what happened, for the table `make chaos` prints and for the tests' assertions.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from scripts.procs import children, wait_for_workers
from scripts.traffic import Outcome, Payload, Run, hammer, send
from tests.service import Service


@dataclass
class SignalResult:
    run: Run
    signalled_at: float  # time.monotonic()
    workers_before: list[int]
    workers_after: list[int]
    notes: dict[str, object] = field(default_factory=dict)

    def failed_after(self, seconds_after_signal: float) -> list[Outcome]:
        return [o for o in self.run.failures() if o.started > self.signalled_at + seconds_after_signal]


def sigkill_under_load(service: Service, payloads: list[Payload], clients: int, seconds: float, kill_after: float) -> SignalResult:
    """SIGKILL one worker while `clients` keep sending; the master should replace it."""
    master = service.master_pid()
    before = children(master)
    victim = before[0]
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        os.kill(victim, signal.SIGKILL)

    timer = threading.Timer(kill_after, kill)
    timer.start()
    run = hammer(f"{service.url}/classify", payloads, clients, seconds=seconds, timeout=60)
    timer.join()
    after = wait_for_workers(master, len(before), exclude={victim})
    replaced = set(after) - set(before)
    return SignalResult(run, killed_at[0], before, after, {"victim": victim, "replacement": sorted(replaced)})


def sighup_under_load(
    service: Service, payloads: list[Payload], clients: int, seconds: float, hup_after: float, weights: Path, new_weights: Path
) -> SignalResult:
    """Swap the weights file, SIGHUP the master under load: new workers serve the new weights."""
    master = service.master_pid()
    before = children(master)
    sha_before = requests.get(f"{service.url}/model", timeout=30).json()["weights"]["sha256"]
    hupped_at: list[float] = []

    def reload() -> None:
        os.replace(new_weights, weights)  # atomic: running workers keep the file they loaded
        hupped_at.append(time.monotonic())
        os.kill(master, signal.SIGHUP)

    timer = threading.Timer(hup_after, reload)
    timer.start()
    run = hammer(f"{service.url}/classify", payloads, clients, seconds=seconds, timeout=60)
    timer.join()
    after = wait_for_workers(master, len(before), exclude=set(before))
    sha_after = requests.get(f"{service.url}/model", timeout=30).json()["weights"]["sha256"]
    sha_file = hashlib.sha256(weights.read_bytes()).hexdigest()
    return SignalResult(run, hupped_at[0], before, after, {"sha_before": sha_before, "sha_after": sha_after, "sha_file": sha_file})


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _parse_answer(answer: bytes) -> tuple[int | None, str | None]:
    """Status and error code of a raw HTTP answer."""
    if not answer.startswith(b"HTTP/1.1 "):
        return None, None
    status = int(answer.split(b" ", 2)[1])
    try:
        return status, json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return status, None


def _partial_upload(url: str, body: bytes, sent: int) -> socket.socket:
    host, _ = _address(url)
    sock = socket.create_connection(_address(url), timeout=60)
    head = f"POST /classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body[:sent])
    return sock


def _status_of(sock: socket.socket) -> int | None:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    finally:
        sock.close()
    return _parse_answer(answer)[0]


@dataclass
class StopResult:
    in_flight_statuses: list[int | None]
    late_request: Outcome  # a request sent after the signal, while the in-flight ones are still running
    exit_code: int | None
    seconds_to_exit: float


def sigterm_with_requests_in_flight(service: Service, payload: Payload, in_flight: int, pause: float = 1.0) -> StopResult:
    """Every worker is busy reading an upload when SIGTERM arrives; then the uploads finish.

    Each in-flight request has sent its headers and half its body: a worker is provably in the
    middle of it. The rest is sent `pause` seconds after the signal. A request sent after the
    signal shows what happens to newcomers during a graceful stop.
    """
    master = service.master_pid()
    half = len(payload.body) // 2
    sockets = [_partial_upload(service.url, payload.body, half) for _ in range(in_flight)]
    time.sleep(0.5)  # let the workers accept them
    signalled = time.monotonic()
    os.kill(master, signal.SIGTERM)
    late: list[Outcome] = []
    late_thread = threading.Thread(target=lambda: late.append(send(f"{service.url}/classify", payload, timeout=60)))
    time.sleep(0.2)
    late_thread.start()
    time.sleep(pause)
    for sock in sockets:
        sock.sendall(payload.body[half:])
    statuses = [_status_of(sock) for sock in sockets]
    try:
        code: int | None = service.process.wait(60)
    except Exception:
        code = None
    late_thread.join()
    return StopResult(statuses, late[0], code, time.monotonic() - signalled)


@dataclass
class SlowClientResult:
    status: int | None
    code: str | None
    seconds: float
    other_request_seconds: float  # a normal request sent meanwhile
    workers_before: list[int]
    workers_after: list[int]


def slow_client(
    service: Service, payload: Payload, mode: str, interval: float = 0.5, limit: float = 60, headers: dict[str, str] | None = None
) -> SlowClientResult:
    """A client that trickles its headers ("headers") or its body ("body"), or sends nothing ("silent")."""
    master = service.master_pid()
    before = children(master)
    host, _ = _address(service.url)
    sock = socket.create_connection(_address(service.url), timeout=interval)
    lines = [
        "POST /classify HTTP/1.1",
        f"Host: {host}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
        "Content-Type: image/jpeg",
        f"Content-Length: {len(payload.body)}",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    trickled = {"body": payload.body, "headers": head, "silent": b""}[mode]
    if mode == "body":
        sock.sendall(head)
    started = time.monotonic()
    other: list[float] = []

    def normal_request() -> None:
        time.sleep(interval)
        t = time.monotonic()
        requests.post(
            f"{service.url}/classify", data=payload.body, headers={"Content-Type": payload.content_type, **(headers or {})}, timeout=60
        )
        other.append(time.monotonic() - t)

    thread = threading.Thread(target=normal_request)
    thread.start()
    answer = b""
    sent = 0
    while time.monotonic() - started < limit:
        try:
            if sent < len(trickled):
                sock.sendall(trickled[sent : sent + 1])
                sent += 1
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        except TimeoutError:
            continue
        except OSError:
            break
    seconds = time.monotonic() - started
    sock.close()
    thread.join()
    status, code = _parse_answer(answer)
    return SlowClientResult(status, code, seconds, other[0] if other else float("nan"), before, children(master))
