"""What create_app() installs last, in one call: API keys, security headers and CORS, the
request-body guard, and the proxies to trust (PROXY_HOPS)."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from api_keys import init_access_control
from body_guard import BodyGuard
from exposure import init_exposure


def harden(app: Flask) -> None:
    init_access_control(app)
    init_exposure(app)
    app.wsgi_app = BodyGuard(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"], app.config["UPLOAD_TIMEOUT"])  # type: ignore[method-assign]
    if hops := app.config["PROXY_HOPS"]:
        # Only headers the trusted proxies set: a client's own X-Forwarded-For would be a forgery.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
