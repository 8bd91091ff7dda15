"""`Expect: 100-continue`, answered when the app first reads the body instead of before the app
runs (gunicorn's way): a request refused from its headers alone gets the refusal instead, and a
client that waits for the 100 never sends its body. sync_worker.py hands the app this input."""

from __future__ import annotations

from typing import Any

from deadline import readable_within

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
        self.state = "owed"  # then "sent"; or "withheld" if the answer came first (then "sent" if the body comes anyway)

    def withhold(self) -> None:
        if self.state == "owed":
            self.state = "withheld"

    def _body_coming(self) -> bool:
        if self.state == "owed":
            self._sock.sendall(CONTINUE)
            self.state = "sent"
        elif self.state == "withheld" and readable_within(self._sock, SENT_ANYWAY_GRACE):
            self.state = "sent"
        return self.state == "sent"

    def read(self, size: int | None = -1) -> bytes:
        return self._stream.read(size) if self._body_coming() else b""  # type: ignore[no-any-return]

    def readline(self, size: int | None = -1) -> bytes:
        return self._stream.readline(size) if self._body_coming() else b""  # type: ignore[no-any-return]
