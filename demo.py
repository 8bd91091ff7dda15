"""GET /: the demo page (web/demo.html, its CSS and JavaScript under /demo/); no external assets."""

from __future__ import annotations

from flask import Blueprint, Response

bp = Blueprint("demo", __name__, static_folder="web", static_url_path="/demo")

# The browser enforces what the page promises: its own scripts and styles only, photos previewed from blob: URLs.
DEMO_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@bp.get("/")
def page() -> Response:
    return bp.send_static_file("demo.html")


@bp.after_request
def _only_own_assets(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = DEMO_POLICY
    return response
