"""How many CPUs a request may use: all of them when it is the only one being worked on,
one each when every worker is busy, and never more threads than CPUs.

One torch thread per worker is best under load (no two workers fight over a core), but it
leaves cores idle when a lone request arrives; all threads per worker is best for a lone request
but oversubscribes under load, where OpenMP's spinning threads waste much of the machine. So the
CPUs are tokens in a semaphore shared by the workers: a request holds one token while it decodes
and runs the model, and borrows the idle tokens for its forward pass when it is alone: no other
request was in flight anywhere when it began, none is now, and no client waits in the listen
queue. A request that finds no token waits (at most one forward pass), so threads never
outnumber CPUs. Under load a worker is idle only for the moment between two requests; "in
flight" spans the whole request (upload parsing and the answer too), and the other two checks
keep that moment from being taken for idleness, which would leave that worker waiting for a CPU
lent out for a whole forward pass.

The semaphore and the per-worker token counts are created by the gunicorn master before it forks
(`install`, from gunicorn.conf.py); when a worker dies holding tokens, the master gives them back
(`release`). Outside gunicorn (tests, a single process) requests use the fixed thread count.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import listen_queue
from cpus import available_cpus

T = TypeVar("T")
R = TypeVar("R")

WAIT_S = 2.0  # a token lost by a worker killed mid-request must not stall others for good

_tokens: Any = None  # multiprocessing.Semaphore, one token per CPU
_held: Any = None  # multiprocessing.RawArray: tokens each worker slot holds
_in_flight: Any = None  # multiprocessing.RawArray: 1 while a worker slot is serving a request
_cpus = 1
_slot: int | None = None
_started_alone = False  # this worker's current request began with no other request in flight
_listeners: list[Any] = []  # the server's listening sockets, to see clients waiting for a worker


def install(cpus: int, slots: int) -> None:
    """In the gunicorn master, before any fork. Idempotent across config reloads (SIGHUP)."""
    global _tokens, _held, _in_flight, _cpus
    if _tokens is None:
        _tokens = multiprocessing.Semaphore(cpus)
        _held = multiprocessing.RawArray("i", slots)
        _in_flight = multiprocessing.RawArray("b", slots)
        _cpus = cpus


def free_slot(taken: set[int]) -> int:
    """A slot no live worker holds (in the master, for a worker about to be forked)."""
    size = len(_held) if _held is not None else 0
    return next((slot for slot in range(size) if slot not in taken), -1)


def attach(slot: int, listeners: Sequence[Any] = ()) -> None:
    """In a worker, right after the fork."""
    global _slot, _listeners
    _slot = slot if _held is not None and 0 <= slot < len(_held) else None
    _listeners = list(listeners)


def _clients_waiting() -> bool:
    """Whether connections wait in a listen queue for a worker to take them: then the idle CPUs
    are about to be needed."""
    return any(listen_queue.waiting(listener) > 0 for listener in _listeners)


def release(slot: int) -> None:
    """In the master when a worker exits: the tokens it still held go back."""
    if _held is not None and 0 <= slot < len(_held):
        for _ in range(_held[slot]):
            _tokens.release()
        _held[slot] = 0
        _in_flight[slot] = 0


def shared() -> bool:
    return _slot is not None


def threads_when_alone() -> int:
    return _cpus


def _take(block: bool) -> bool:
    if not _tokens.acquire(block, WAIT_S if block else None):
        return False
    _held[_slot] += 1
    return True


def _give(count: int) -> None:
    for _ in range(count):
        _held[_slot] -= 1
        _tokens.release()


@contextmanager
def in_flight() -> Iterator[None]:
    """Around a whole request: tells other workers this one is not idle."""
    if _slot is None:
        yield
        return
    global _started_alone
    _started_alone = sum(_in_flight) == 0
    _in_flight[_slot] = 1
    try:
        yield
    finally:
        _in_flight[_slot] = 0


@contextmanager
def cpu() -> Iterator[None]:
    """Hold one CPU for the CPU-heavy part of a request (waits while others use them all)."""
    if _slot is None:
        yield
        return
    took = _take(block=True)  # after WAIT_S, go ahead anyway rather than stall
    try:
        yield
    finally:
        _give(1 if took else 0)


@contextmanager
def borrow(default: int) -> Iterator[int]:
    """Inside cpu(): take more idle CPUs, up to all of them when this is the only request in
    flight, else up to this worker's share (`default`). Yields the number of threads to use."""
    if _slot is None:
        yield default
        return
    extra = 0
    # Idle CPUs are borrowed only by a request that found nothing else in flight when it began
    # and still finds nothing in flight and no client queued: under load, a worker between two
    # requests must not find its CPU lent out for a whole forward pass.
    alone = _started_alone and sum(_in_flight) <= 1 and not _clients_waiting()
    wanted = _cpus if alone else default
    while extra < wanted - 1 and _take(block=False):
        extra += 1
    try:
        yield 1 + extra
    finally:
        _give(extra)


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
