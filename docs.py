"""GET /openapi.json and the interactive docs at /docs/, every asset served from this service.

Swagger UI comes from the pinned flask-swagger-ui package, which ships Swagger UI's own
distribution files; nothing is fetched from a CDN, so the docs work with no internet.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

import openapi

bp = Blueprint("openapi", __name__)

SWAGGER_UI_CONFIG = {
    "app_name": "classify API",
    "layout": "BaseLayout",  # no top bar for exploring other APIs' URLs
    "validatorUrl": None,  # Swagger UI would otherwise send the document to an online validator
    "tryItOutEnabled": True,  # upload a photo straight away
    "displayRequestDuration": True,
}
# Swagger UI's page has one inline script (its configuration) and inline styles; nothing may come from elsewhere.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(current_app.extensions["openapi"])


def _swagger_ui() -> Blueprint:
    ui = get_swaggerui_blueprint("/docs", "/openapi.json", config=dict(SWAGGER_UI_CONFIG), blueprint_name="docs")

    @ui.after_request
    def _only_own_assets(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = DOCS_POLICY
        return response

    return ui


def init_app(app: Flask) -> None:
    # Built once: it depends only on the configuration and the model.
    app.extensions["openapi"] = openapi.document(app.config, app.extensions["classifier"])
    app.register_blueprint(bp)
    app.register_blueprint(_swagger_ui())
