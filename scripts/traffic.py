"""Client side of the load and fault runs: many concurrent clients, every outcome recorded.

Loopback only, bounded in requests and in time. Each request is one fresh connection (sync
workers close after every answer). An outcome is the HTTP status, or the kind of failure when no
answer came: timeout, reset, refused, disconnected.
"""

from __future__ import annotations

import http.client
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str = "image/jpeg"


@dataclass
class Outcome:
    started: float  # time.monotonic() when the request was sent
    seconds: float
    status: int | None  # None: no answer
    failure: str | None = None  # timeout, reset, refused, disconnected, error:<name>

    @property
    def answered(self) -> bool:
        return self.status is not None


def _failure_kind(error: BaseException) -> str:
    if isinstance(error, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(error, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, http.client.RemoteDisconnected | http.client.IncompleteRead | ConnectionAbortedError):
        return "disconnected"
    return f"error:{type(error).__name__}"


def send(url: str, payload: Payload, timeout: float, headers: dict[str, str] | None = None) -> Outcome:
    """POST one payload to url; never raises."""
    parts = urlsplit(url)
    started = time.monotonic()
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        connection.request(
            "POST",
            parts.path + (f"?{parts.query}" if parts.query else ""),
            payload.body,
            {"Content-Type": payload.content_type, **(headers or {})},
        )
        response = connection.getresponse()
        response.read()
        return Outcome(started, time.monotonic() - started, response.status)
    except Exception as error:  # every failure is an outcome to count, not a crash of the run
        return Outcome(started, time.monotonic() - started, None, _failure_kind(error))
    finally:
        connection.close()


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> Counter[str]:
        return Counter(str(o.status) if o.answered else o.failure or "?" for o in self.outcomes)

    def failures(self) -> list[Outcome]:
        """Requests without a 200: no answer at all, or any other status, 503 included (the service sheds no load)."""
        return [o for o in self.outcomes if o.status != 200]

    def percentile(self, fraction: float) -> float:
        latencies = sorted(o.seconds for o in self.outcomes if o.answered)
        if not latencies:
            return math.nan
        return latencies[min(len(latencies) - 1, math.ceil(fraction * len(latencies)) - 1)]

    @property
    def throughput(self) -> float:
        return len(self.outcomes) / self.seconds if self.seconds else 0.0


def hammer(
    url: str,
    payloads: Sequence[Payload],
    clients: int,
    seconds: float | None = None,
    requests: int | None = None,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> Run:
    """`clients` threads send back to back until `seconds` pass or `requests` have been sent."""
    assert seconds or requests, "bound the run in time or in requests"
    run = Run()
    lock = threading.Lock()
    sent = 0
    start = time.monotonic()
    deadline = start + seconds if seconds else math.inf

    def take_ticket() -> int | None:
        nonlocal sent
        with lock:
            if time.monotonic() >= deadline or (requests is not None and sent >= requests):
                return None
            sent += 1
            return sent

    def client() -> None:
        while (ticket := take_ticket()) is not None:
            outcome = send(url, payloads[ticket % len(payloads)], timeout, headers)
            with lock:
                run.outcomes.append(outcome)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.monotonic() - start
    return run


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain-text table, columns padded to their widest cell."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
