"""gunicorn's sync worker, with a deadline for request headers and JSON for gunicorn's own errors.

A sync worker reads a request's headers itself, with a blocking socket and no deadline. A client
that connects and sends nothing (or a byte now and then) holds the worker until gunicorn's
TIMEOUT kills it, and the replacement then spends seconds loading its model: measured, see
RELIABILITY.md. Here the headers must arrive within HEADER_TIMEOUT seconds of the connection
being accepted, or the client is answered 408 and the worker goes on to the next connection.
The request body has its own deadline, UPLOAD_TIMEOUT, in body_guard.py.

Errors gunicorn answers before the app runs (a request line over 4094 bytes, a malformed header,
a bad Content-Length) are written as the service's JSON error instead of gunicorn's HTML page.

`Expect: 100-continue` is answered when the app first reads the body, not before the app runs, so
a request refused from its headers alone gets the refusal instead, and a client that waits for
the 100 never sends its body.

On SIGTERM a worker also answers the connections that were waiting in the listen queue, which
would otherwise be reset when the last worker exits.
"""

from __future__ import annotations

import contextlib
import json
import select
from typing import Any

from gunicorn import util
from gunicorn.workers import sync

import deadline
import listen_queue
import request_id
from errors import INTERNAL_ERROR_MESSAGE, error_body
from exposure import JSON_ANSWER_HEADERS

# Codes for the statuses gunicorn itself answers with (gunicorn/workers/base.py handle_error).
GUNICORN_CODES = {
    400: "bad_request",
    403: "forbidden",
    408: "header_timeout",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
}


class HeaderTimeout(Exception):
    """The request headers did not arrive within HEADER_TIMEOUT seconds."""

    def __str__(self) -> str:
        return "request headers did not arrive in time"


_JSON_HEADER_LINES = "".join(f"{name}: {value}\r\n" for name, value in JSON_ANSWER_HEADERS.items())


def _readable(mesg: str, limit: int = 300) -> str:
    # gunicorn quotes what it could not parse as the repr() of bytes read as latin-1 ("ï¼\x93" for
    # b"\xef\xbc\x93"): give every non-ASCII byte as a \xNN escape instead, and bound the length.
    text = mesg.encode("latin-1", "replace").decode("ascii", "backslashreplace")
    return text if len(text) <= limit else text[:limit] + "..."


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Stands in for gunicorn.util.write_error: the same answer, as {"error": {code, message}}, with a
    request id, a JSON log line and a count in the metrics, like the app's own answers."""
    code = GUNICORN_CODES.get(status_int) or reason.lower().replace(" ", "_")
    message = _readable(mesg) or (INTERNAL_ERROR_MESSAGE if status_int >= 500 else reason)
    body = json.dumps(error_body(code, message)).encode()
    rid = request_id.choose(_incoming_request_id())  # a new one if its headers were not read, or could not be
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"{_JSON_HEADER_LINES}{request_id.HEADER}: {rid}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)
    _account(status_int, rid, len(body))


# The request SyncWorker.handle_error is answering, for write_json_error, which gunicorn gives only
# the socket: a sync worker answers one request at a time.
_answering: dict[str, Any] = {}


def _incoming_request_id() -> str | None:
    # A request past TIMEOUT had its headers parsed: keep the caller's id, for the one answer that most needs tracing.
    headers = getattr(_answering.get("req"), "headers", None) or []
    return next((value for name, value in headers if name.upper() == request_id.HEADER.upper()), None)


def _account(status: int, rid: str, response_bytes: int) -> None:
    # Imported here, in a worker: gunicorn loads this module in its master, before the metrics
    # folder exists, and prometheus_client picks its storage when it is first imported.
    import metrics
    import request_log

    req, addr = _answering.get("req"), _answering.get("addr")
    method, path = getattr(req, "method", None), getattr(req, "path", None)
    peer = addr[0] if isinstance(addr, tuple) and addr and isinstance(addr[0], str) else None
    request_log.write_line(request_log.server_record(status, rid, response_bytes, peer, method, path))
    metrics.count_server_answer(status, method)


# gunicorn's handle_error() computes the status and the message, then calls util.write_error.
util.write_error = write_json_error

# While a stopping worker answers the connections still queued: seconds for one to send its headers.
DRAIN_HEADER_TIMEOUT = 1.0

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# After an answer that withheld the 100: how long to wait for body bytes from a client that sends
# anyway (some do not wait for the 100, or stop waiting) before taking it that none will come.
SENT_ANYWAY_GRACE = 1.0


class ContinueOnFirstRead:
    """wsgi.input of a request sent with `Expect: 100-continue`: the 100 goes out when the app first
    reads the body, never once its answer has begun. An answer from the headers alone (413 from
    Content-Length, 401, 415) then spares the client sending a body nobody would read; a client
    that sends it anyway is still drained (body_guard.py), so that it can read the answer."""

    def __init__(self, stream: Any, sock: Any) -> None:
        self._stream = stream
        self._sock = sock
        self.state = "owed"  # then "sent"; or "withheld" if the answer came first, then "sent anyway"

    def withhold(self) -> None:
        if self.state == "owed":
            self.state = "withheld"

    def _body_coming(self) -> bool:
        if self.state == "owed":
            self._sock.sendall(CONTINUE)
            self.state = "sent"
        elif self.state == "withheld" and select.select([self._sock], [], [], SENT_ANYWAY_GRACE)[0]:
            self.state = "sent anyway"
        return self.state in {"sent", "sent anyway"}

    def read(self, size: int | None = -1) -> bytes:
        return self._stream.read(size) if self._body_coming() else b""  # type: ignore[no-any-return]

    def readline(self, size: int | None = -1) -> bytes:
        return self._stream.readline(size) if self._body_coming() else b""  # type: ignore[no-any-return]


class SyncWorker(sync.SyncWorker):
    continue_owed = False  # the request being handled sent `Expect: 100-continue`
    header_timeout: float  # HEADER_TIMEOUT, set once the app is loaded (load_wsgi)

    stopping_gracefully = False  # SIGTERM; not a TIMEOUT abort (SIGABRT) nor a quick stop (SIGQUIT, SIGINT)

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.stopping_gracefully = True
        super().handle_exit(sig, frame)

    def run(self) -> None:
        super().run()  # returns once told to stop, or when the master is gone
        if self.stopping_gracefully and self.is_parent_alive():
            self._answer_queued()

    def _answer_queued(self) -> None:
        """On SIGTERM the master closes its copy of the listening socket, and when the last worker
        exits, connections still queued there are reset: requests clients had already sent. Each
        worker answers as many as were queued when it stopped; a queue that keeps filling (no load
        balancer draining traffic first, or a SIGHUP's new workers booting) is left to the others.
        A queued connection that has sent nothing gets a short deadline, not a stop's worth."""
        self.header_timeout = min(self.header_timeout, DRAIN_HEADER_TIMEOUT)
        for listener in self.sockets:
            for _ in range(listen_queue.waiting(listener)):
                self.notify()
                try:
                    self.accept(listener)
                except BlockingIOError:
                    break  # the other workers took the rest
                except ConnectionAbortedError:
                    continue  # its client left

    def accept(self, listener: Any) -> None:
        client, addr = listener.accept()
        client.setblocking(1)
        util.close_on_exec(client)
        try:
            with deadline.alarm(self.header_timeout, HeaderTimeout):  # handle_request ends it once the headers are in
                self.handle(listener, client, addr)
        except HeaderTimeout:
            # Fired while gunicorn lingered on a connection whose client left before its headers
            # were complete (no answer is owed): just close it.
            with contextlib.suppress(OSError):
                client.close()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app: Any = self.wsgi  # type: ignore[has-type]
        self.header_timeout = app.config["HEADER_TIMEOUT"]  # the app's settings, loaded once

        def continue_when_read(environ: dict[str, Any], start_response: Any) -> Any:
            if not self.continue_owed:
                return app(environ, start_response)
            environ["wsgi.input"] = body = ContinueOnFirstRead(environ["wsgi.input"], environ["gunicorn.socket"])

            def answer_begins(*args: Any) -> Any:
                body.withhold()
                return start_response(*args)

            return app(environ, answer_begins)

        self.wsgi = continue_when_read

    def handle_request(self, listener: Any, req: Any, client: Any, addr: Any) -> None:
        deadline.cancel()  # the headers are in; the body has UPLOAD_TIMEOUT
        # gunicorn would send "100 Continue" before the app runs; continue_when_read sends it later, if at all.
        self.continue_owed, req._expected_100_continue = req._expected_100_continue, False
        super().handle_request(listener, req, client, addr)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        deadline.cancel()  # not while gunicorn answers and lingers
        _answering.update(req=req or getattr(exc, "req", None), addr=addr)
        try:
            self._answer_error(req, client, addr, exc)
        finally:
            _answering.clear()

    def _answer_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, HeaderTimeout):
            self.log.warning("Request headers from ip=%s did not arrive within %ss", (addr or ("",))[0], self.header_timeout)
            try:
                write_json_error(
                    client, 408, "Request Timeout", f"The request headers did not arrive within {self.header_timeout:g} seconds."
                )
            except Exception:
                self.log.debug("Failed to send the header timeout answer.")
            return
        super().handle_error(req, client, addr, exc)
