"""Prometheus multiprocess mode under gunicorn; these run in the master (see gunicorn.conf.py).

prometheus_client decides at import whether to keep values in files, from PROMETHEUS_MULTIPROC_DIR.
The master sets it before any worker starts, and workers import prometheus_client only after the
fork, so every worker writes its files there. The folder must start empty: old files would add
a previous run's counts to this one's.
"""

from __future__ import annotations

import atexit
import errno
import os
import shutil
import tempfile
from pathlib import Path

from settings import ConfigError

ENV = "PROMETHEUS_MULTIPROC_DIR"
# Names the folder a master made for itself. A new master started by SIGUSR2 inherits ENV naming
# it: the old master still counts there and removes it when it exits, so the new one makes its own.
MADE_ENV = "CLASSIFY_METRICS_FOLDER_MADE"
_created: Path | None = None  # a folder this process made, removed when the master exits


def prepare() -> Path:
    """Use PROMETHEUS_MULTIPROC_DIR emptied of metric files, or make a private folder in memory.
    Raises settings.ConfigError when the folder cannot be made, emptied or written."""
    global _created
    configured = os.environ.get(ENV, "").strip()
    if configured and configured == os.environ.get(MADE_ENV):
        configured = ""  # the previous master's
    if configured:
        folder = Path(configured)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob("*.db"):  # only prometheus_client's files: the folder may hold others
                stale.unlink()
            if not os.access(folder, os.W_OK):
                raise PermissionError(errno.EACCES, "not writable")
        except OSError as exc:
            raise ConfigError(f"{ENV}={configured!r} cannot be used as the metrics folder: {exc.strerror or exc}.") from None
    else:
        folder = Path(tempfile.mkdtemp(prefix="classify-metrics-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        _created = folder
        # When the master exits, however it stops (gunicorn's on_exit hook is skipped when it
        # halts); workers inherit the hook, and must not remove the folder they all write in.
        atexit.register(_cleanup_in, os.getpid())
        os.environ[MADE_ENV] = str(folder)
    os.environ[ENV] = str(folder)
    return folder


def worker_exited(pid: int) -> None:
    """Forget a dead worker's live gauges; its counters and histograms stay in the totals."""
    from prometheus_client import multiprocess  # imported late: only once ENV is set

    multiprocess.mark_process_dead(pid)


def _cleanup_in(master: int) -> None:
    if os.getpid() == master:
        cleanup()


def cleanup() -> None:
    global _created
    if _created is not None:
        shutil.rmtree(_created, ignore_errors=True)
        _created = None
