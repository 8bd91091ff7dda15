"""Optional API keys: Bearer or X-API-Key, every key compared in constant time, /health open."""

from __future__ import annotations

import hmac
import os
import signal
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

import api_keys
from app import create_app
from scripts.procs import children, wait_for_workers
from settings import ConfigError
from tests import service
from tests.hardening.conftest import API_KEY, ORIGIN


def assert_unauthorized(response, invalid: bool) -> None:
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="classify"')
    assert ('error="invalid_token"' in challenge) is invalid


def test_without_keys_configured_every_route_is_open(client: FlaskClient) -> None:
    assert client.get("/model").status_code == 200


def test_keys_given_to_create_app_as_text_are_read_like_the_environment_variable(seeded_weights: Path) -> None:
    # As a string, API_KEYS was iterated character by character: every single character was a key.
    client = create_app({"MODEL_WEIGHTS": str(seeded_weights), "API_KEYS": "s3cret-key, other-key"}).test_client()
    statuses = [client.get("/model", headers={"X-API-Key": key}).status_code for key in ("s3cret-key", "other-key", "s", "-")]
    assert statuses == [200, 200, 401, 401]


def test_other_settings_given_as_text_are_parsed_and_checked_too(seeded_weights: Path) -> None:
    assert create_app({"MODEL_WEIGHTS": str(seeded_weights), "MAX_FILES": "2"}).config["MAX_FILES"] == 2
    with pytest.raises(ConfigError, match="MAX_FILES='two' is not valid"):
        create_app({"MODEL_WEIGHTS": str(seeded_weights), "MAX_FILES": "two"})


def test_a_request_without_a_key_is_a_401_with_a_bearer_challenge(hardened_client: FlaskClient) -> None:
    assert_unauthorized(hardened_client.get("/model"), invalid=False)
    assert_unauthorized(hardened_client.post("/classify", data=b"x", content_type="image/jpeg"), invalid=False)


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": "wrong"},
        {"X-API-Key": API_KEY + "x"},
        {"X-API-Key": API_KEY[:-1]},
        {"Authorization": "Bearer ключ-😀"},
        {"Authorization": f"Basic {API_KEY}"},
    ],
)
def test_a_wrong_key_is_a_401(hardened_client: FlaskClient, headers: dict[str, str]) -> None:
    response = hardened_client.get("/model", headers=headers)
    assert_unauthorized(response, invalid="X-API-Key" in headers or headers["Authorization"].startswith("Bearer"))


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {API_KEY}"}, {"Authorization": f"bearer  {API_KEY} "}, {"X-API-Key": API_KEY}]
)
def test_the_right_key_in_either_header_is_let_in(hardened_client: FlaskClient, headers: dict[str, str]) -> None:
    assert hardened_client.get("/model", headers=headers).status_code == 200


def test_health_stays_open_and_unknown_routes_are_not_revealed(hardened_client: FlaskClient) -> None:
    assert hardened_client.get("/health").status_code == 200
    assert hardened_client.get("/no-such-route").status_code == 401


@pytest.mark.parametrize("path", ["/metrics", "/model", "/"])
def test_metrics_model_and_the_demo_page_need_a_key(hardened_client: FlaskClient, path: str) -> None:
    assert_unauthorized(hardened_client.get(path), invalid=False)
    assert hardened_client.get(path, headers={"X-API-Key": API_KEY}).status_code == 200


def test_the_api_description_and_docs_stay_open_and_say_how_to_authenticate(hardened_client: FlaskClient) -> None:
    assert hardened_client.get("/docs/").status_code == 200
    document = hardened_client.get("/openapi.json").get_json()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    classify = document["paths"]["/classify"]["post"]
    assert "401" in classify["responses"] and classify["security"]
    assert "security" not in document["paths"]["/health"]["get"]


def test_without_keys_the_description_lists_no_security_scheme(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert "securitySchemes" not in document["components"]
    assert "401" not in document["paths"]["/classify"]["post"]["responses"]


def test_keys_come_from_the_environment_and_from_a_file_with_comments(
    tmp_path: Path, seeded_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# rotated 2026-01\nfile-key-1\n\n  file-key-2  \n")
    monkeypatch.setenv("API_KEYS", "env-key-1, env-key-2")
    monkeypatch.setenv("API_KEYS_FILE", str(keys_file))
    client = create_app({"MODEL_WEIGHTS": str(seeded_weights)}).test_client()
    for key in ("env-key-1", "env-key-2", "file-key-1", "file-key-2"):
        assert client.get("/model", headers={"X-API-Key": key}).status_code == 200, key
    assert client.get("/model", headers={"X-API-Key": "# rotated 2026-01"}).status_code == 401


@pytest.mark.parametrize("content", [None, "# only a comment\n"], ids=["missing file", "no keys in file"])
def test_an_unusable_keys_file_stops_the_app_from_starting(tmp_path: Path, seeded_weights: Path, content: str | None) -> None:
    keys_file = tmp_path / "keys"
    if content is not None:
        keys_file.write_text(content)
    with pytest.raises(ConfigError, match="API_KEYS_FILE"):
        create_app({"MODEL_WEIGHTS": str(seeded_weights), "API_KEYS_FILE": str(keys_file)})


def test_the_server_refuses_to_start_on_an_unusable_keys_file_said_once_before_any_worker(
    tmp_path: Path, seeded_weights: Path
) -> None:
    result = service.refused_to_start({"MODEL_WEIGHTS": str(seeded_weights), "API_KEYS_FILE": str(tmp_path / "missing")})
    output = result.stdout + result.stderr
    assert output.count("classify: cannot start:") == 1 and "API_KEYS_FILE" in output
    assert "Booting worker" not in output  # the master refused: no worker loaded a model first


def test_a_sighup_makes_the_new_workers_take_the_rotated_keys_file(tmp_path: Path, seeded_weights: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("old-key\n")
    with service.running(tmp_path / "gunicorn.log", {"MODEL_WEIGHTS": str(seeded_weights), "API_KEYS_FILE": str(keys_file)}) as live:

        def status(key: str) -> int:
            return requests.get(f"{live.url}/model", headers={"X-API-Key": key}, timeout=30).status_code

        assert (status("old-key"), status("new-key")) == (200, 401)
        keys_file.write_text("new-key\n")
        master = live.master_pid()
        old_workers = children(master)
        os.kill(master, signal.SIGHUP)
        victims = wait_for_workers(master, 2, exclude=set(old_workers))  # every answer now the new workers'
        assert (status("old-key"), status("new-key")) == (401, 200)
        # Changed again without a SIGHUP: workers that replace crashed ones keep the master's keys.
        keys_file.write_text("third-key\n")
        for victim in victims:
            os.kill(victim, signal.SIGKILL)
        workers = wait_for_workers(master, 2, exclude=set(victims))
        assert (status("new-key"), status("third-key")) == (200, 401)
        # A SIGHUP with an unusable keys file keeps the keys read before, rather than stopping the server.
        keys_file.write_text("# no keys left\n")
        os.kill(master, signal.SIGHUP)
        wait_for_workers(master, 2, exclude=set(workers))
        assert (status("new-key"), status("third-key")) == (200, 401)


def test_a_preflight_to_a_path_that_is_no_route_is_a_401_not_a_404_that_reveals_it(hardened_client: FlaskClient) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    assert hardened_client.options("/classify", headers=preflight).status_code == 200
    assert_unauthorized(hardened_client.options("/admin", headers=preflight), invalid=False)


def test_an_options_request_that_is_not_a_cors_preflight_needs_a_key(hardened_client: FlaskClient) -> None:
    assert_unauthorized(hardened_client.options("/metrics"), invalid=False)
    assert hardened_client.options("/metrics", headers={"X-API-Key": API_KEY}).status_code == 200


def test_with_cors_off_a_preflight_needs_a_key_too(seeded_weights: Path) -> None:
    client = create_app({"MODEL_WEIGHTS": str(seeded_weights), "API_KEYS": [API_KEY]}).test_client()
    preflight = client.options("/classify", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert_unauthorized(preflight, invalid=False)


def test_every_configured_key_is_compared_on_every_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    # No early exit: the time taken does not say which key, if any, matched.
    calls = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", counting)
    digests = [api_keys._digest(key) for key in ("first", "second", "third")]
    assert api_keys.key_matches("first", digests)
    assert not api_keys.key_matches("nope", digests)
    assert len(calls) == 6
    assert all(len(a) == len(b) == 32 for a, b in calls)  # digests: the key's length does not show either


def test_over_http_a_key_is_needed_and_health_is_open(live: service.Service) -> None:
    response = requests.get(f"{live.url}/model", timeout=30)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert requests.get(f"{live.url}/model", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30).status_code == 200
    assert requests.get(f"{live.url}/health", timeout=30).status_code == 200
