"""Gunicorn settings: `gunicorn -c gunicorn.conf.py` (what `make run` does).

The master imports torch (so workers share those pages after the fork) but runs no torch
compute: OpenMP thread pools do not survive a fork. It reads the weights, labels and keys once
(model_loader.preload, settings.hold_keys_file); each worker builds its own model from them.
"""

import contextlib
import errno
import gc
import math
import os
import socket
import sys
from typing import NoReturn

from gunicorn import util as gunicorn_util

import cpu_budget
import health_port
import metrics_multiprocess
import settings
from cpus import available_cpus

wsgi_app = "wsgi:app"


def _cannot_start(exc: Exception) -> NoReturn:
    print(f"classify: cannot start: {exc}", file=sys.stderr, flush=True)
    sys.exit(1)


try:  # gunicorn's own settings, checked like the app's: one clear line, not a traceback
    _host = settings.environment_value("HOST", str.strip, "127.0.0.1")
    _port = settings.environment_value("PORT", settings.port, 8000)
    workers = settings.environment_value("WEB_CONCURRENCY", settings.positive_int, available_cpus())
    timeout = settings.environment_value("TIMEOUT", settings.whole_seconds, 30)  # a request (gunicorn does not time a worker's boot)
    graceful_timeout = settings.environment_value("GRACEFUL_TIMEOUT", settings.whole_seconds, 30)  # in-flight requests finish on SIGTERM
    _health_port = settings.environment_value("HEALTH_PORT", settings.port, None)  # see health_port.py
    if _health_port == _port:
        raise settings.ConfigError(f"HEALTH_PORT={_health_port} must differ from PORT.")
except settings.ConfigError as exc:
    _cannot_start(exc)
bind = [f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"]

worker_class = "sync_worker.SyncWorker"  # sync, plus a header deadline and JSON errors
# A lone request may use every CPU, busy workers split them (cpu_budget.py): the shared tokens are made here.
os.environ["CLASSIFY_WORKERS"] = str(workers)
cpu_budget.install(cpus=available_cpus(), slots=max(64, 4 * workers))

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
    worker.health_socket = server.health_socket  # opened in on_starting


def post_fork(server, worker):
    cpu_budget.attach(worker.cpu_slot, worker.sockets)


def post_worker_init(worker):
    # The model is loaded (wsgi.py built the app): from now on this worker answers the health port too.
    if worker.health_socket is not None:
        from wsgi import app

        health_port.serve(worker.health_socket, app.extensions["classifier"].name, stopping=lambda: not worker.alive)


def on_starting(server):
    """Refuse to start, once and clearly, when the configuration or the weights are unusable.
    Otherwise keep the weights, labels and keys, which every worker is then built from
    (model_loader.preload, settings.hold_keys_file), whatever becomes of the files."""
    try:
        settings.hold_keys_file(settings.load(with_keys_file=False)["API_KEYS_FILE"])
        config = settings.load()  # with the keys just held: the file is read once
        _check_deadlines(config, server.cfg.timeout)
        _check_port_free(server)
        server.header_timeout = config["HEADER_TIMEOUT"]  # for when_ready
        # Once, here: gunicorn reads this file again on SIGHUP, and the port stays open across that.
        server.health_socket = _open_health_port()
        # Before any worker forks: workers then count into files there, which /metrics adds up.
        metrics_folder = metrics_multiprocess.prepare()
    except settings.ConfigError as exc:
        _cannot_start(exc)
    # torch, in the master so that the workers share its pages; only now, so that the checks above
    # need not wait seconds for it.
    import model

    try:
        _preload(config)
    except (model.ModelLoadError, settings.ConfigError) as exc:
        _cannot_start(exc)
    if server.health_socket is not None:
        server.log.info("Health port: %s (GET /health)", _health_port)
    server.log.info("API keys: %s", f"on ({len(config['API_KEYS'])})" if config["API_KEYS"] else "off, every route is open")
    model.release_free_memory()  # what reading the weights left, before the workers inherit the heap
    server.log.info("Metrics folder: %s", metrics_folder)


def when_ready(server):
    """A connection that has sent nothing stays with the kernel (TCP_DEFER_ACCEPT) for HEADER_TIMEOUT,
    rounded up to its SYN-ACK retries (1, 3, 7, 15, 31 s), instead of occupying a sync worker:
    browsers' preconnects, a balancer's spare connections and idle attackers no longer queue real
    requests behind them. One the kernel hands over still silent is answered 408 at once (sync_worker.py)."""
    for listener in server.LISTENERS:
        with contextlib.suppress(AttributeError, OSError):  # not Linux, or not TCP (a unix socket)
            listener.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, math.ceil(server.header_timeout))


def _preload(config):
    import model
    import model_loader

    # DEFAULT_TOPK against the labels first here, so that a bad value stops the master once (and
    # labels too few for it at a SIGHUP are refused before they are kept); create_app checks it
    # again for runs without gunicorn.
    model_loader.preload(model.ModelSpec.from_settings(config), lambda labels: settings.check_default_topk(config, len(labels)))


def _open_health_port():
    if _health_port is None:
        return None
    try:
        return health_port.open_listener(_host, _health_port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else exc  # without create_server's "(while attempting to bind ...)"
        raise settings.ConfigError(f"HEALTH_PORT={_health_port} cannot be opened on {_host}: {reason}.") from None


def _check_port_free(server):
    """An address in use, or a HOST no interface has, in one line now: gunicorn would retry five
    times, a second apart, with a line each, and only once the weights were read. The addresses
    are gunicorn's own (HOST and PORT, or a --bind in GUNICORN_CMD_ARGS), bound as it binds them."""
    if "GUNICORN_FD" in os.environ or "LISTEN_FDS" in os.environ or server.cfg.reuse_port:
        return  # inherited (USR2 re-exec, systemd), or meant to be shared: in use by design
    for address in server.cfg.address:
        if not isinstance(address, tuple):
            continue  # a unix socket or a file descriptor
        host, port = address
        try:
            with socket.socket(socket.AF_INET6 if gunicorn_util.is_ipv6(host) else socket.AF_INET) as trial:
                trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                trial.bind(address)
        except socket.gaierror as exc:
            raise settings.ConfigError(f"HOST={host} cannot be used: {exc.strerror}.") from None
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise settings.ConfigError(f"HOST={host} cannot be used: no interface of this machine has it.") from None
            raise settings.ConfigError(f"PORT={port} cannot be opened on HOST={host}: {exc.strerror}.") from None


def _check_deadlines(config, timeout):
    # gunicorn's effective TIMEOUT: GUNICORN_CMD_ARGS='--timeout 4' would otherwise slip past.
    for name in ("UPLOAD_TIMEOUT", "HEADER_TIMEOUT"):
        if config[name] >= timeout:
            # gunicorn would kill the worker first, and the slow client would get a 500, not its 408.
            raise settings.ConfigError(f"{name}={config[name]:g} must be less than TIMEOUT={timeout}.")


def on_reload(server):
    """SIGHUP: read the (perhaps replaced) weights, labels and keys file again for the new workers.
    Unusable ones are refused, and the new workers serve what the old ones did."""
    import model

    config = settings.load(with_keys_file=False)  # the environment, checked at start, is unchanged
    try:
        _preload(config)
    except (model.ModelLoadError, settings.ConfigError) as exc:
        server.log.error("classify: SIGHUP: %s The new workers serve the model read before.", exc)
    try:  # on its own: a key to revoke must not wait for a good weights file
        settings.hold_keys_file(config["API_KEYS_FILE"])
    except settings.ConfigError as exc:
        server.log.error("classify: SIGHUP: %s The new workers keep the keys read before.", exc)
    model.release_free_memory()


def child_exit(server, worker):
    cpu_budget.release(worker.cpu_slot)  # a worker killed mid-request must not stay "busy"
    metrics_multiprocess.worker_exited(worker.pid)  # its counts stay; its live gauges go
