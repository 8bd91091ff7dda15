"""How many CPUs a request may use: all of them when it is the only one being worked on,
its worker's share when other workers are busy too.

One torch thread per worker is best under load (no two workers fight over a core), but it
leaves cores idle when a lone request arrives; all threads per worker is best for a lone request
but oversubscribes under load. So workers publish "busy" flags in shared memory, and each
request picks its thread count from how many workers are busy when its forward pass starts.

The flags live in an anonymous shared mapping created by the gunicorn master before it forks
(`install`, from gunicorn.conf.py); each worker gets a slot. Outside gunicorn (tests, a single
process) there are no flags and a request uses the process's fixed thread count.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from cpus import available_cpus

T = TypeVar("T")
R = TypeVar("R")

_flags: Any = None  # multiprocessing.RawArray of busy flags, one per worker slot
_cpus = 1
_slot: int | None = None


def install(cpus: int, slots: int) -> None:
    """In the gunicorn master, before any fork. Idempotent across config reloads (SIGHUP)."""
    global _flags, _cpus
    if _flags is None or len(_flags) < slots:
        _flags = multiprocessing.RawArray("b", slots)
    _cpus = cpus


def free_slot(taken: set[int]) -> int:
    """A slot no live worker holds (in the master, for a worker about to be forked)."""
    size = len(_flags) if _flags is not None else 0
    return next((slot for slot in range(size) if slot not in taken), -1)


def attach(slot: int) -> None:
    """In a worker, right after the fork."""
    global _slot
    _slot = slot if _flags is not None and 0 <= slot < len(_flags) else None


def release(slot: int) -> None:
    """In the master when a worker exits, so that a worker killed mid-request is not counted busy."""
    if _flags is not None and 0 <= slot < len(_flags):
        _flags[slot] = 0


def shared() -> bool:
    return _slot is not None


@contextmanager
def busy() -> Iterator[None]:
    """Mark this worker busy for the CPU-heavy part of a request."""
    if _slot is None:
        yield
        return
    _flags[_slot] = 1
    try:
        yield
    finally:
        _flags[_slot] = 0


def threads_when_alone() -> int:
    return _cpus


def threads(default: int) -> int:
    """Torch threads for the forward pass about to start: the CPUs split among busy workers."""
    if _slot is None:
        return default
    busy_workers = max(1, sum(_flags))
    return max(1, _cpus // busy_workers)


_pool: ThreadPoolExecutor | None = None


def map_parallel(function: Callable[[T], R], items: Sequence[T], threads: int) -> list[R]:
    """function over items, in order, on up to `threads` threads (Pillow and torch release the GIL)."""
    global _pool
    threads = min(threads, len(items))
    if threads < 2:
        return [function(item) for item in items]
    if _pool is None:  # created lazily, in the worker: threads do not survive a fork
        _pool = ThreadPoolExecutor(max_workers=available_cpus(), thread_name_prefix="preprocess")
    chunks = [items[start::threads] for start in range(threads)]
    done = list(_pool.map(lambda chunk: [function(item) for item in chunk], chunks))
    return [done[i % threads][i // threads] for i in range(len(items))]
