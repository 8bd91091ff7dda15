"""Optional API keys: `Authorization: Bearer <key>` or `X-API-Key: <key>`; /health and the docs stay open.

Keys come from API_KEYS (comma-separated) and API_KEYS_FILE (one per line, `#` comments). With
no keys configured every request is let in. Keys are compared as SHA-256 digests with
hmac.compare_digest, against every configured key, so the time taken does not depend on how much
of a key was right, on its length, or on which key matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Request, Response, request

from errors import error_response
from settings import ConfigError

# /health: load balancers probe it without credentials. The API's description and its docs page
# say how to authenticate, so they are readable without a key; /metrics, /model and the demo
# page are not.
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs"})
OPEN_PREFIXES = ("/docs/",)
REALM = 'Bearer realm="classify"'


def read_keys_file(path: str) -> list[str]:
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"API_KEYS_FILE={path!r} could not be read ({getattr(exc, 'strerror', None) or exc}).") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def configured_keys(config: Mapping[str, Any]) -> list[str]:
    """API_KEYS plus the keys in API_KEYS_FILE; raises ConfigError if the file cannot be read."""
    keys = list(config["API_KEYS"])
    if config["API_KEYS_FILE"]:
        keys += read_keys_file(config["API_KEYS_FILE"])
        if not keys:
            raise ConfigError(f"API_KEYS_FILE={config['API_KEYS_FILE']!r} has no keys in it; unset it to run without keys.")
    return keys


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


def _checker(digests: list[bytes]) -> Callable[[], Response | None]:
    def check_api_key() -> Response | None:
        # CORS preflights carry no credentials by design; they reveal nothing and run no model.
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES) or request.method == "OPTIONS":
            return None
        key = presented_key(request)
        if key is None:
            return _unauthorized("An API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.", REALM)
        if not key_matches(key, digests):
            return _unauthorized("The API key is not valid.", f'{REALM}, error="invalid_token"')
        return None

    return check_api_key


def init_access_control(app: Flask) -> None:
    """Require a key on every route but OPEN_PATHS when keys are configured."""
    keys = configured_keys(app.config)
    if keys:
        app.before_request(_checker([_digest(key) for key in keys]))
