"""HEALTH_PORT: GET /health on a port of its own, answered by a thread in every worker.

A sync worker answers one request at a time, so on the main port /health waits behind the
classifications queued before it (2-4 s with 64 clients on one 2-worker pod). A probe with a
short timeout then fails a pod that is merely busy. The master opens this port; each worker, once
its model is loaded, answers on it from a thread. The forward pass and socket reads release the
GIL, so that answer takes milliseconds however busy the worker is. A worker that is stopping
answers 503, so that a load balancer stops sending it work while it finishes what it has.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from errors import HTTP_CODES, error_body
from exposure import JSON_ANSWER_HEADERS

ONLY_HEALTH = "This port answers GET /health only."


def open_listener(host: str, port: int) -> socket.socket:
    """The health port's socket, made in the master before the fork: every worker accepts on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # "::" takes IPv4 too, as gunicorn's own socket does (create_server would make it IPv6 only).
    dualstack = host == "::" and socket.has_dualstack_ipv6()
    # reuse_port: a new master started by SIGUSR2 opens it while the old one still has it.
    sock = socket.create_server((host, port), family=family, backlog=64, reuse_port=True, dualstack_ipv6=dualstack)
    # Every worker waits on it; those that lose the race for a connection go back to waiting.
    sock.setblocking(False)
    return sock


class _HealthHandler(BaseHTTPRequestHandler):
    server: _HealthServer
    timeout = 5  # seconds for a probe to send its request

    def do_GET(self) -> None:
        if self.path.partition("?")[0] != "/health":
            self._send(404, error_body("not_found", ONLY_HEALTH))
        elif self.server.stopping():
            self._send(503, {"status": "stopping", "model": self.server.model})
        else:
            self._send(200, {"status": "ok", "model": self.server.model})

    do_HEAD = do_GET  # _send leaves the body out

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals, a method other than GET or HEAD (its 501) or a malformed
        # request, as JSON like every other error of the service.
        self.close_connection = True
        self.request_version = self.protocol_version  # not the bare body http.server gives what looks like HTTP/0.9
        if code == HTTPStatus.NOT_IMPLEMENTED:
            self._send(405, error_body("method_not_allowed", ONLY_HEALTH))
        else:
            self._send(code, error_body(HTTP_CODES.get(code, "bad_request"), message or ""))

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        for name, value in JSON_ANSWER_HEADERS.items():
            self.send_header(name, value)
        if status == 405:
            self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def version_string(self) -> str:
        return "classify"  # not http.server's and Python's versions

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes come every few seconds: a line for each would bury the request log


# Probes answered at once by one worker: more are closed unanswered. A client that trickles bytes
# holds its thread for as long as it likes; without a bound, 1300 of them took a worker past 1024
# open descriptors.
MAX_PROBES = 64


class _HealthServer(ThreadingHTTPServer):  # a probe that sends nothing holds only its own thread
    def __init__(self, sock: socket.socket, model: str, stopping: Callable[[], bool]) -> None:
        super().__init__(sock.getsockname()[:2], _HealthHandler, bind_and_activate=False)
        self.socket.close()  # the one HTTPServer made; the master's, shared by all workers, is used instead
        self.socket = sock
        self.model = model
        self.stopping = stopping
        self._probes = threading.BoundedSemaphore(MAX_PROBES)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._probes.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._probes.release()


def serve(sock: socket.socket, model: str, stopping: Callable[[], bool]) -> None:
    """Answer GET /health on `sock` from a daemon thread of this worker, until it exits."""
    server = _HealthServer(sock, model, stopping)

    def run() -> None:
        # Signals are the main thread's: its deadlines are SIGALRM interrupting a blocking read
        # (deadline.py), which a signal delivered to this thread would not do.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        server.serve_forever()

    threading.Thread(target=run, name="health-port", daemon=True).start()
