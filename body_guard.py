"""Guard the request body between the server and the app.

What it adds to werkzeug's own limits (measured against gunicorn 27, see RELIABILITY.md):
- a wall-clock deadline for the whole upload (UPLOAD_TIMEOUT): a client that trickles its body is
  answered 408 and the sync worker is freed, instead of being killed by gunicorn's TIMEOUT;
- a streamed (chunked) body over MAX_UPLOAD_MB is a 413: werkzeug silently truncates it to the
  limit, so a raw upload would be decoded truncated and answered with a misleading 415;
- a body the server cannot frame (bad chunk size, missing chunk terminator) is a 400, not a 500;
- a body shorter than its Content-Length (the client went away) is a 400, not a half-read image;
- what the app left unread (an early 413, 401 or 415) is read and discarded, bounded in bytes and
  time, after the answer is sent, so the client can finish sending and read the answer instead of
  meeting a reset; gunicorn's own lingering close drains only 64 KiB.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from werkzeug.wsgi import ClosingIterator

import deadline
from errors import APIError, too_large_message

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

CHUNK = 64 * 1024
# After an early answer, read and discard at most this much of the body to let the client finish
# sending (and so read the answer): twice the upload limit, and at least 32 MiB.
DRAIN_FACTOR = 2
DRAIN_MIN_BYTES = 32 * 1024 * 1024


class _Expired(Exception):
    """Raised by SIGALRM inside a blocking read whose deadline has passed."""


def _timeout_error(seconds: float) -> APIError:
    return APIError(408, "upload_timeout", f"The request body did not arrive within {seconds:g} seconds; the upload was abandoned.")


class GuardedInput(io.RawIOBase):
    """wsgi.input with a deadline, the size limit for streamed bodies, and server errors as 4xx."""

    def __init__(self, stream: IO[bytes], content_length: int | None, max_bytes: int | None, timeout: float) -> None:
        self._stream = stream
        self._length = content_length
        self._max = max_bytes
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self.received = 0
        self.broken = False  # after a failed read the stream's state is unknown: never read again

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if self.broken:
            return b""
        data = self._read_within_deadline(size)
        self.received += len(data)
        if self._length is not None and not data and size != 0 and self.received < self._length:
            self.broken = True
            raise APIError(400, "incomplete_body", f"The connection ended after {self.received} of the {self._length} bytes announced.")
        if self._length is None and self._max is not None and self.received >= self._max and self._more_after_limit():
            raise APIError(413, "payload_too_large", too_large_message(self._max))
        return data

    def _read_within_deadline(self, size: int | None) -> bytes:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            self.broken = True
            raise _timeout_error(self._timeout)
        try:
            with deadline.alarm(remaining, _Expired):
                return self._stream.read(-1 if size is None else size)
        except _Expired:
            self.broken = True
            raise _timeout_error(self._timeout) from None
        except APIError:
            raise
        except OSError:
            self.broken = True
            raise APIError(400, "incomplete_body", "The connection failed before the whole request body arrived.") from None
        except Exception:  # the server could not frame the body, e.g. gunicorn's InvalidChunkSize
            self.broken = True
            raise APIError(400, "malformed_body", "The request body is not valid HTTP framing (chunked encoding or length).") from None

    def _more_after_limit(self) -> bool:
        # werkzeug stops a streamed body exactly at the limit without saying so; one more byte
        # tells "exactly the limit" from "over it".
        return bool(self._read_within_deadline(1))

    def drain(self) -> None:
        """Read and discard what is left, within the deadline and the drain cap."""
        if self.broken:
            return
        cap = max((self._max or 0) * DRAIN_FACTOR, DRAIN_MIN_BYTES)
        if self._length is not None and self._length - self.received > cap:
            return  # it would not finish within the cap anyway: close and let the client see it
        drained = 0
        try:
            while drained <= cap and self._deadline > time.monotonic():
                with deadline.alarm(self._deadline - time.monotonic(), _Expired):
                    data = self._stream.read(CHUNK)
                if not data:
                    return
                drained += len(data)
        except Exception:  # the answer is already sent: a failure here only ends the draining early
            return


class BodyGuard:
    """WSGI middleware installing GuardedInput and draining the body after the answer is sent."""

    def __init__(self, app: WSGIApp, max_bytes: int | None, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH", "")
        guarded = GuardedInput(environ["wsgi.input"], int(length) if length.isdigit() else None, self.max_bytes, self.timeout)
        environ["wsgi.input"] = guarded
        # The WSGI server calls close() after the whole answer is written: drain then.
        return ClosingIterator(self.app(environ, start_response), [guarded.drain])
