"""What create_app() installs last, in one call: API keys, security headers and CORS, and the
request-body guard."""

from __future__ import annotations

from flask import Flask

from access import init_access_control
from body_guard import BodyGuard
from exposure import init_exposure


def harden(app: Flask) -> None:
    init_access_control(app)
    init_exposure(app)
    app.wsgi_app = BodyGuard(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"], app.config["UPLOAD_TIMEOUT"])  # type: ignore[method-assign]
