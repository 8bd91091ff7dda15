"""Optional API keys: `Authorization: Bearer <key>` or `X-API-Key: <key>`; /health and the docs stay open.

Keys come from API_KEYS (comma-separated) and API_KEYS_FILE (one per line, `#` comments), which
settings.load() reads into API_KEYS. With no keys configured every request is let in. Keys are
compared as SHA-256 digests with hmac.compare_digest, against every configured key, so the time
taken does not depend on how much of a key was right, on its length, or on which key matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from flask import Flask, Request, Response, request

from errors import error_response

# /health: load balancers probe it without credentials. The API's description and its docs page
# say how to authenticate, so they are readable without a key; /metrics, /model and the demo
# page are not.
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs"})
OPEN_PREFIXES = ("/docs/",)
REALM = 'Bearer realm="classify"'


def is_open(path: str) -> bool:
    """Served without a key even when keys are configured."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _is_cors_preflight(req: Request) -> bool:
    return req.method == "OPTIONS" and "Origin" in req.headers and "Access-Control-Request-Method" in req.headers


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def presented_key(req: Request) -> str | None:
    """The key the client sent, from `Authorization: Bearer` or `X-API-Key`; None if neither."""
    scheme, _, credentials = req.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return req.headers.get("X-API-Key", "").strip() or None


def key_matches(key: str, digests: list[bytes]) -> bool:
    candidate = _digest(key)
    matched = False
    for digest in digests:  # no early exit: every key is compared every time
        matched |= hmac.compare_digest(candidate, digest)
    return matched


def _unauthorized(message: str, challenge: str) -> Response:
    response = error_response(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = challenge
    return response


def _checker(digests: list[bytes], cors: bool) -> Callable[[], Response | None]:
    def check_api_key() -> Response | None:
        # CORS preflights carry no credentials by design; they run no model. Any other OPTIONS (an
        # Allow list) is an answer like the others, and needs a key; so does a preflight to a path
        # that is no route, whose 404 would tell it from the routes that exist.
        if is_open(request.path) or (cors and _is_cors_preflight(request) and request.url_rule is not None):
            return None
        key = presented_key(request)
        if key is None:
            return _unauthorized("An API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.", REALM)
        if not key_matches(key, digests):
            return _unauthorized("The API key is not valid.", f'{REALM}, error="invalid_token"')
        return None

    return check_api_key


def init_access_control(app: Flask) -> None:
    """Require a key on every route but the open ones when keys are configured."""
    if keys := app.config["API_KEYS"]:
        app.before_request(_checker([_digest(key) for key in keys], cors=bool(app.config["CORS_ORIGINS"])))
