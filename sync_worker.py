"""gunicorn's sync worker, with a deadline for request headers, JSON for gunicorn's own errors
(gunicorn_errors.py) and `Expect: 100-continue` answered late (expect_continue.py).

A sync worker reads a request's headers itself, with a blocking socket and no deadline. A client
that connects and sends nothing (or a byte now and then) holds the worker until gunicorn's
TIMEOUT kills it, and the replacement then spends seconds loading its model: measured, see
RELIABILITY.md. Here the headers must arrive within HEADER_TIMEOUT seconds of the connection
being accepted, or the client is answered 408 and the worker goes on to the next connection.
The request body has its own deadline, UPLOAD_TIMEOUT, in body_guard.py.

On SIGTERM a worker also answers the connections that were waiting in the listen queue, which
would otherwise be reset when the last worker exits.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

from gunicorn import util
from gunicorn.workers import sync

import deadline
import gunicorn_errors
import listen_queue
from expect_continue import ContinueOnFirstRead

# gunicorn's handle_error() computes the status and the message, then calls util.write_error.
util.write_error = gunicorn_errors.write_json_error


class HeaderTimeout(Exception):
    """The request headers did not arrive within HEADER_TIMEOUT seconds."""

    def __str__(self) -> str:
        return "request headers did not arrive in time"


# While a stopping worker answers the connections still queued: seconds for one to send its headers.
DRAIN_HEADER_TIMEOUT = 1.0
# After a 408 for headers that did not arrive: seconds to wait for the client to close.
HEADER_TIMEOUT_LINGER = 0.2
# For the first bytes of a connection the kernel handed over without any (see SyncWorker.accept).
SILENT_GRACE = 0.5


def _defers(listener: Any) -> bool:
    """Whether the kernel holds this socket's silent connections back (TCP_DEFER_ACCEPT, gunicorn.conf.py)."""
    try:
        return bool(listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT))
    except (AttributeError, OSError):  # not Linux, or not TCP
        return False


class SyncWorker(sync.SyncWorker):
    continue_owed = False  # the request being handled sent `Expect: 100-continue`
    header_timeout: float  # HEADER_TIMEOUT, set once the app is loaded (load_wsgi)

    stopping_gracefully = False  # SIGTERM; not a TIMEOUT abort (SIGABRT) nor a quick stop (SIGQUIT, SIGINT)
    aborted = False  # by the master at TIMEOUT (SIGABRT): the SystemExit a request then meets is a timeout's

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.stopping_gracefully = True
        super().handle_exit(sig, frame)

    def handle_abort(self, sig: int, frame: Any) -> None:
        self.aborted = True
        super().handle_abort(sig, frame)

    def run(self) -> None:
        self.deferring = {listener for listener in self.sockets if _defers(listener)}  # once, not per connection
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
        # Handed over with nothing to read, the kernel deferring: silent for the whole deferral, at
        # least HEADER_TIMEOUT, so its time for headers is up already. Answered now, not after
        # HEADER_TIMEOUT more, which let two idle preconnects from one browser page hold both
        # workers for 10 s. A short wait first: when its queue of half-open connections is full the
        # kernel answers with SYN cookies, which skip the deferral, and the request may follow just after.
        if listener in self.deferring and not deadline.readable_within(client, SILENT_GRACE):
            self.handle_error(None, client, addr, HeaderTimeout())
            return
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
        gunicorn_errors.cors_origins = app.config["CORS_ORIGINS"]

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
        with gunicorn_errors.answering(req or getattr(exc, "req", None), addr):
            self._answer_error(req, client, addr, exc)

    def _answer_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, HeaderTimeout):
            self.log.warning("Request headers from ip=%s did not arrive within %ss", (addr or ("",))[0], self.header_timeout)
            try:
                gunicorn_errors.write_json_error(
                    client, 408, "Request Timeout", f"The request headers did not arrive within {self.header_timeout:g} seconds."
                )
            except Exception:
                self.log.debug("Failed to send the header timeout answer.")
            # A client this late has little or nothing in flight: not gunicorn's 2 s of lingering,
            # which each silent connection added to the time it held this worker.
            util.close_graceful(client, timeout=HEADER_TIMEOUT_LINGER)
            return
        if self.aborted and isinstance(exc, SystemExit) and req is not None:
            # Not a bug in the request's handling: one line, not gunicorn's traceback of where it was cut.
            self.log.error("Request %s %s ran past TIMEOUT=%ss: answered 500", req.method, req.path, self.cfg.timeout)
            with contextlib.suppress(Exception):
                gunicorn_errors.write_json_error(client, 500, "Internal Server Error", "")
                client.close()
            # Now, not once the request's decoding threads finish (seconds for large images): the
            # master would kill this worker first, and log "Perhaps out of memory?".
            os._exit(1)
        super().handle_error(req, client, addr, exc)
