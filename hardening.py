"""What create_app() installs last, in one call: API keys, security headers and CORS, the
request-body guard, and the proxies to trust (PROXY_HOPS)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from api_keys import init_access_control
from body_guard import BodyGuard, WSGIApp
from exposure import init_exposure


def harden(app: Flask) -> None:
    init_access_control(app)
    init_exposure(app)
    app.wsgi_app = BodyGuard(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"], app.config["UPLOAD_TIMEOUT"])  # type: ignore[method-assign]
    if hops := app.config["PROXY_HOPS"]:
        # Only headers the trusted proxies set: a client's own X-Forwarded-For would be a forgery.
        app.wsgi_app = ProxyFix(_only_addresses(app.wsgi_app), x_for=hops, x_proto=hops)  # type: ignore[method-assign]


def _only_addresses(app: WSGIApp) -> WSGIApp:
    """What ProxyFix took from the headers, kept only if it is an IP address and http or https: with
    PROXY_HOPS counting more proxies than there are, or a pod reached directly, the headers are a
    client's text (7 KB into every log line, a redirect to javascript://)."""

    def checked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        before = environ["werkzeug.proxy_fix.orig"]
        try:
            ipaddress.ip_address(environ.get("REMOTE_ADDR") or "")
        except ValueError:
            environ["REMOTE_ADDR"] = before["REMOTE_ADDR"]
        if environ.get("wsgi.url_scheme") not in {"http", "https"}:
            environ["wsgi.url_scheme"] = before["wsgi.url_scheme"]
        return app(environ, start_response)

    return checked
