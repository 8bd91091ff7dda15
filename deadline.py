"""A wall-clock deadline for blocking reads: SIGALRM raises an exception in the main thread.

A socket timeout bounds each recv(), not the whole read: a client sending a byte every few
seconds would reset it forever. A sync worker serves one request at a time in its main thread,
so a process timer is safe (sync_worker.py for the headers, body_guard.py for the body).
`readable_within` is the short wait for a client's next bytes.
"""

from __future__ import annotations

import select
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


@contextmanager
def alarm(seconds: float, expired: type[Exception]) -> Iterator[None]:
    """Raise `expired` in whatever blocking call is running once `seconds` have passed."""
    if threading.current_thread() is not threading.main_thread():
        yield  # e.g. a threaded development server: no timer, only the caller's own checks
        return

    def _raise(signum: int, frame: object) -> NoReturn:
        raise expired

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def readable_within(sock: object, seconds: float) -> bool:
    """Whether `sock` has bytes (or its end) to read within `seconds`. poll, not select(): a
    descriptor past 1024 would crash the worker."""
    waiting = select.poll()
    waiting.register(sock, select.POLLIN)  # type: ignore[arg-type]
    return bool(waiting.poll(seconds * 1000))


def cancel() -> None:
    """End the running alarm early (its `with` block still restores the handler)."""
    signal.setitimer(signal.ITIMER_REAL, 0)
