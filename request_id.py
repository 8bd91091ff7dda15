"""X-Request-ID: the caller's id when it is safe to log and echo, else a fresh one; echoed back."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

HEADER = "X-Request-ID"
MAX_LENGTH = 128
# Ids from proxies and tracers (UUIDs, AWS trace ids, base64) fit; anything that could break a
# log line or a header (spaces, quotes, control characters) does not.
SAFE = re.compile(rf"[A-Za-z0-9._~:/+=@-]{{1,{MAX_LENGTH}}}")


def choose(incoming: str | None) -> str:
    """The incoming id if it is 1..128 safe characters, else a new random one (never a mangled copy)."""
    candidate = (incoming or "").strip()
    return candidate if SAFE.fullmatch(candidate) else uuid.uuid4().hex


def current() -> str:
    if "request_id" not in g:
        g.request_id = choose(request.headers.get(HEADER))
    return g.request_id  # type: ignore[no-any-return]


def _assign() -> None:
    current()  # before any view, so that error responses carry the id too


def _echo(response: Response) -> Response:
    response.headers[HEADER] = current()
    return response


def init_app(app: Flask) -> None:
    app.before_request(_assign)
    app.after_request(_echo)
