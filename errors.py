"""Every error leaves the service as JSON: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import request_id
from settings import MIB

log = logging.getLogger(__name__)

# Stable machine names for werkzeug's own errors; anything else gets its snake_cased name.
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}
# Said by the app and by gunicorn_errors.py for gunicorn's own 500s: one wording.
INTERNAL_ERROR_MESSAGE = "The server failed to handle this request."


def too_large_message(limit: int | None) -> str:
    """Said wherever a body is refused for its size (the app, body_guard.py): one wording, with the limit."""
    if not limit:
        return "The request body is larger than this service accepts."
    size = f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit:,} bytes"
    return f"The request body is larger than this service accepts (at most {size})."


class APIError(Exception):
    """An error a client caused, with the status and stable code it is answered with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return error_body(self.code, self.message)["error"]


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The one shape of every error, also where gunicorn or the health port answers (no Flask)."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str) -> Response:
    response = jsonify(error_body(code, message))
    response.status_code = status
    return response


def _handle_api_error(error: APIError) -> Response:
    return error_response(error.status, error.code, error.message)


def _handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    code = HTTP_CODES.get(status) or (error.name or "error").lower().replace(" ", "_")
    message = error.description or error.name
    if status == 413:
        message = too_large_message(current_app.config["MAX_CONTENT_LENGTH"])
    if isinstance(error, MethodNotAllowed) and (allowed := [m for m in error.valid_methods or [] if m not in {"HEAD", "OPTIONS"}]):
        message = f"{request.method} is not accepted at {request.path}: use {' or '.join(allowed)}."
    response = error_response(status, code, message)
    # Keep werkzeug's headers that matter to clients, such as Allow on a 405.
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error while serving request %s: %s %s", request_id.current(), request.method, request.path)
    return error_response(500, "internal_error", INTERNAL_ERROR_MESSAGE)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(APIError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
