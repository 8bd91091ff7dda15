"""Gunicorn settings: `gunicorn -c gunicorn.conf.py` (what `make run` does).

The master imports torch (so workers share those pages after the fork) but runs no torch
compute: OpenMP thread pools do not survive a fork. It reads the weights once (model.preload);
each worker builds its own model around them.
"""

import gc
import os
import sys

import cpu_budget
import metrics_multiprocess
import settings
from cpus import available_cpus
from model import ModelLoadError, ModelSpec, preload, release_free_memory

wsgi_app = "wsgi:app"

_host = os.environ.get("HOST", "127.0.0.1")
_port = os.environ.get("PORT", "8000")
bind = [f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"]

workers = int(os.environ.get("WEB_CONCURRENCY") or available_cpus())
worker_class = "sync_worker.SyncWorker"  # sync, plus a header deadline and JSON errors
# A lone request may use every CPU, busy workers split them (cpu_budget.py): the shared tokens are made here.
os.environ["CLASSIFY_WORKERS"] = str(workers)
cpu_budget.install(cpus=available_cpus(), slots=max(64, 4 * workers))

timeout = int(os.environ.get("TIMEOUT", "30"))  # a request, or a worker's model load, may take this long
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))  # in-flight requests finish on SIGTERM
keepalive = 5
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat off slow disks
control_socket_disable = True  # one shared ~/.gunicorn socket would clash between instances

accesslog = None  # the app writes one JSON line per request instead (request_log.py)
errorlog = "-"


def pre_fork(server, worker):
    # Keep the master's objects (torch, torchvision) out of the workers' garbage collections:
    # a collection writes to every object it visits, turning shared pages into private copies.
    gc.freeze()
    taken = {getattr(live, "cpu_slot", -1) for live in server.WORKERS.values()}
    worker.cpu_slot = cpu_budget.free_slot(taken)


def post_fork(server, worker):
    cpu_budget.attach(worker.cpu_slot, worker.sockets)


def on_starting(server):
    """Refuse to start, once and clearly, when the configuration or the weights are unusable.
    Otherwise keep the weights, which every worker then shares (model.preload)."""
    try:
        preload(ModelSpec.from_settings(settings.load()))
    except (settings.ConfigError, ModelLoadError) as exc:
        print(f"classify: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    release_free_memory()  # what reading the weights left, before the workers inherit the heap
    # Before any worker forks: workers then count into files there, which /metrics adds up.
    server.log.info("Metrics folder: %s", metrics_multiprocess.prepare())


def on_reload(server):
    """SIGHUP: read the (perhaps replaced) weights again for the new workers to share."""
    try:
        preload(ModelSpec.from_settings(settings.load()))
    except (settings.ConfigError, ModelLoadError) as exc:
        server.log.error("classify: the new workers will not start: %s", exc)
    release_free_memory()


def child_exit(server, worker):
    cpu_budget.release(worker.cpu_slot)  # a worker killed mid-request must not stay "busy"
    metrics_multiprocess.worker_exited(worker.pid)  # its counts stay; its live gauges go


def on_exit(server):
    metrics_multiprocess.cleanup()
