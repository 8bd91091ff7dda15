"""What the service shows: security headers, CORS only for allowed origins, no debug, no internals."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

import settings
from app import create_app
from settings import ConfigError
from tests import service
from tests.hardening.answers import assert_no_internals
from tests.hardening.conftest import API_KEY, ORIGIN

KEY = {"X-API-Key": API_KEY}


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/model", 200), ("GET", "/nope", 404), ("POST", "/classify", 400)])
def test_every_answer_carries_the_security_headers(hardened_client: FlaskClient, method: str, path: str, status: int) -> None:
    response = hardened_client.open(path, method=method, headers=KEY)
    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert response.headers["Cache-Control"] == "no-store"


def test_cors_is_off_by_default(client: FlaskClient) -> None:
    response = client.get("/model", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options("/classify", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_answers_only_the_allowed_origins(hardened_client: FlaskClient) -> None:
    allowed = hardened_client.get("/model", headers={**KEY, "Origin": ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = hardened_client.get("/model", headers={**KEY, "Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    for page in (allowed, other, hardened_client.get("/docs/")):  # so a shared cache keeps them apart
        assert "Origin" in page.vary


def test_a_page_from_an_allowed_origin_may_send_and_read_the_request_id(hardened_client: FlaskClient) -> None:
    preflight = hardened_client.options(
        "/classify", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-request-id"}
    )
    assert "x-request-id" in preflight.headers["Access-Control-Allow-Headers"].lower()
    answer = hardened_client.get("/model", headers={**KEY, "Origin": ORIGIN, "X-Request-ID": "page-1"})
    assert answer.headers["X-Request-ID"] == "page-1"
    assert "x-request-id" in answer.headers["Access-Control-Expose-Headers"].lower()


def test_a_preflight_from_an_allowed_origin_needs_no_key_and_allows_the_key_headers(hardened_client: FlaskClient) -> None:
    response = hardened_client.options(
        "/classify", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "x-api-key" in response.headers["Access-Control-Allow-Headers"].lower()


def test_a_401_is_readable_by_an_allowed_browser_origin(hardened_client: FlaskClient) -> None:
    response = hardened_client.get("/model", headers={"Origin": ORIGIN})
    assert response.status_code == 401 and response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_flask_debug_in_the_environment_does_not_turn_debug_on(seeded_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app({"MODEL_WEIGHTS": str(seeded_weights)})
    assert app.debug is False


def test_a_bug_is_a_json_500_without_stack_trace_or_paths_even_with_flask_debug_set(
    seeded_weights: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app({"MODEL_WEIGHTS": str(seeded_weights)})

    def broken() -> str:
        raise RuntimeError(f"failed to open {Path(__file__)}")

    app.add_url_rule("/broken", view_func=broken)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/broken", headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
    assert_no_internals(response.get_data())
    # On the server the traceback is logged, with the request's id to find its JSON line by.
    (record,) = [r for r in caplog.records if r.exc_info]
    assert "bug-1" in record.getMessage() and "GET /broken" in record.getMessage()


@pytest.mark.parametrize(
    ("variable", "value", "limit", "expected"),
    [
        ("MAX_UPLOAD_MB", "3", "max_upload_bytes", 3 * 1024 * 1024),
        ("MAX_IMAGE_PIXELS", "5000000", "max_image_pixels", 5_000_000),
        ("MAX_REQUEST_PIXELS", "6000000", "max_request_pixels", 6_000_000),
        ("MAX_FILES", "7", "max_files", 7),
    ],
)
def test_limits_are_set_by_environment_and_reported(
    seeded_weights: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, limit: str, expected: int
) -> None:
    monkeypatch.setenv(variable, value)
    body = create_app({"MODEL_WEIGHTS": str(seeded_weights)}).test_client().get("/model").get_json()
    assert body["limits"][limit] == expected


def test_over_http_answers_carry_the_security_headers_and_cors(live: service.Service) -> None:
    response = requests.get(f"{live.url}/model", headers={**KEY, "Origin": ORIGIN}, timeout=30)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert (
        "Access-Control-Allow-Origin"
        not in requests.get(f"{live.url}/model", headers={**KEY, "Origin": "https://evil.example"}, timeout=30).headers
    )


@pytest.mark.parametrize("value", ["0", "0.0000001", "inf", "nan", "2000000"])
def test_an_upload_limit_that_would_refuse_every_photo_or_none_is_refused_at_start(value: str) -> None:
    with pytest.raises(ConfigError, match="MAX_UPLOAD_MB"):
        settings.from_environment({"MAX_UPLOAD_MB": value})


@pytest.mark.parametrize("value", ["app.example.com", "https://app.example.com/", "https://app.example.com/path", "null"])
def test_a_cors_origin_that_no_browser_could_send_is_refused_at_start(value: str) -> None:
    # It would never match, and CORS would look on while allowing no one.
    with pytest.raises(ConfigError, match="is not an origin"):
        settings.from_environment({"CORS_ORIGINS": f"https://ok.example, {value}"})


def test_cors_origins_with_ports_and_the_any_site_wildcard_are_accepted() -> None:
    value = "https://app.example.com, http://localhost:5173, *"
    assert settings.from_environment({"CORS_ORIGINS": value})["CORS_ORIGINS"] == ["https://app.example.com", "http://localhost:5173", "*"]
