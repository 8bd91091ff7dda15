"""Fault scenarios against a running service: signals under load, and slow clients.

Each returns what happened, for the table `make chaos` prints and for the tests' assertions.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from scripts.procs import children, wait_for_workers
from scripts.traffic import Outcome, Payload, Run, hammer, send
from tests.hardening import wire
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


def _signal_during_load(
    service: Service, payloads: list[Payload], clients: int, seconds: float, after: float, action: Callable[[], None]
) -> tuple[Run, float]:
    """`clients` keep sending for `seconds`; `action` (a signal) runs `after` seconds in. Returns when it ran."""
    fired_at: list[float] = []

    def fire() -> None:
        fired_at.append(time.monotonic())
        action()

    timer = threading.Timer(after, fire)
    timer.start()
    run = hammer(f"{service.url}/classify", payloads, clients, seconds=seconds, timeout=60)
    timer.join()
    return run, fired_at[0]


def sigkill_under_load(service: Service, payloads: list[Payload], clients: int, seconds: float, kill_after: float) -> SignalResult:
    """SIGKILL one worker while `clients` keep sending; the master should replace it."""
    master = service.master_pid()
    before = children(master)
    victim = before[0]
    run, killed_at = _signal_during_load(service, payloads, clients, seconds, kill_after, lambda: os.kill(victim, signal.SIGKILL))
    after = wait_for_workers(master, len(before), exclude={victim})
    replaced = set(after) - set(before)
    return SignalResult(run, killed_at, before, after, {"victim": victim, "replacement": sorted(replaced)})


def sighup_under_load(
    service: Service, payloads: list[Payload], clients: int, seconds: float, hup_after: float, weights: Path, new_weights: Path
) -> SignalResult:
    """Swap the weights file, SIGHUP the master under load: new workers serve the new weights."""
    master = service.master_pid()
    before = children(master)
    sha_before = requests.get(f"{service.url}/model", timeout=30).json()["weights"]["sha256"]

    def reload() -> None:
        os.replace(new_weights, weights)  # atomic: running workers keep the file they loaded
        os.kill(master, signal.SIGHUP)

    run, hupped_at = _signal_during_load(service, payloads, clients, seconds, hup_after, reload)
    after = wait_for_workers(master, len(before), exclude=set(before))
    sha_after = requests.get(f"{service.url}/model", timeout=30).json()["weights"]["sha256"]
    sha_file = hashlib.sha256(weights.read_bytes()).hexdigest()
    return SignalResult(run, hupped_at, before, after, {"sha_before": sha_before, "sha_after": sha_after, "sha_file": sha_file})


def _partial_upload(url: str, body: bytes, sent: int) -> socket.socket:
    host, _ = wire.address(url)
    sock = socket.create_connection(wire.address(url), timeout=60)
    head = f"POST /classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body[:sent])
    return sock


def _status_of(sock: socket.socket) -> int | None:
    try:
        return wire.parse(wire.read_to_close(sock, tolerate=OSError)).status
    finally:
        sock.close()


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
    other_request_status: int | None  # None: it got no answer
    workers_before: list[int]
    workers_after: list[int]


def slow_client(
    service: Service, payload: Payload, mode: str, interval: float = 0.5, limit: float = 60, headers: dict[str, str] | None = None
) -> SlowClientResult:
    """A client that trickles its headers ("headers") or its body ("body"), or sends nothing ("silent")."""
    master = service.master_pid()
    before = children(master)
    host, _ = wire.address(service.url)
    sock = socket.create_connection(wire.address(service.url), timeout=interval)
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
    other: list[tuple[float, int | None]] = []

    def normal_request() -> None:
        time.sleep(interval)
        t = time.monotonic()
        try:
            status: int | None = requests.post(
                f"{service.url}/classify", data=payload.body, headers={"Content-Type": payload.content_type, **(headers or {})}, timeout=60
            ).status_code
        except requests.RequestException:
            status = None
        other.append((time.monotonic() - t, status))

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
    parsed = wire.parse(answer)
    other_seconds, other_status = other[0]
    return SlowClientResult(parsed.status, parsed.error_code, seconds, other_seconds, other_status, before, children(master))
