"""Gunicorn's processes seen from /proc: a master's workers and their resident memory (Linux)."""

from __future__ import annotations

import time
from pathlib import Path


def children(pid: int) -> list[int]:
    """Direct children of pid (a gunicorn master's are its workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(found)


def _status_bytes(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # in KiB there
    raise RuntimeError(f"no {field} for {pid}")


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, from /proc/PID/status."""
    return _status_bytes(pid, "VmRSS")


def peak_rss_bytes(pid: int | str = "self") -> int:
    """The most resident memory a process has had since it started (VmHWM). Not ru_maxrss, which
    keeps the peak of the process that forked it."""
    return _status_bytes(pid, "VmHWM")


def wait_for_workers(master: int, count: int, exclude: set[int] | frozenset[int] = frozenset(), timeout: float = 60) -> list[int]:
    """Wait until the master has `count` workers, none of them in `exclude`; returns their pids."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = children(master)
        if len(workers) == count and not set(workers) & exclude:
            return workers
        time.sleep(0.05)
    raise TimeoutError(f"master {master} has workers {children(master)}, wanted {count} new ones (not {sorted(exclude)})")
