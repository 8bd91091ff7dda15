"""X-Request-ID: honoured when safe, otherwise generated, and echoed on every response; the request log line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from app import create_app

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("incoming", ["abc-123", "Root=1-5759e988-bd862e3fe1be46a994272793", "a" * 128, "3f2a1c0e-uuid:/+=@~._"])
def test_a_safe_request_id_is_echoed_unchanged(client: FlaskClient, incoming: str) -> None:
    assert client.get("/health", headers={"X-Request-ID": incoming}).headers["X-Request-ID"] == incoming


@pytest.mark.parametrize("incoming", ["a" * 129, "has space", 'quote"', "semi;colon", "tab\there", "é", ""])
def test_an_unsafe_or_overlong_request_id_is_replaced_by_a_generated_one(client: FlaskClient, incoming: str) -> None:
    assert GENERATED.fullmatch(client.get("/health", headers={"X-Request-ID": incoming}).headers["X-Request-ID"])


def test_each_request_without_an_id_gets_a_fresh_one(client: FlaskClient) -> None:
    ids = {client.get("/health").headers["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3 and all(GENERATED.fullmatch(i) for i in ids)


def test_error_responses_carry_the_request_id_too(client: FlaskClient) -> None:
    for response in (
        client.get("/nowhere", headers={"X-Request-ID": "e1"}),
        client.get("/classify", headers={"X-Request-ID": "e1"}),
        client.post("/classify", data=b"x", content_type="text/plain", headers={"X-Request-ID": "e1"}),
    ):
        assert response.status_code >= 400 and response.headers["X-Request-ID"] == "e1"


def test_the_request_log_line_is_json_with_the_id_and_what_the_request_did(client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    client.post("/classify", data=b"not an image", content_type="image/jpeg", headers={"X-Request-ID": "log-1"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["request_id"] == "log-1"
    assert (line["method"], line["route"], line["status"], line["images"], line["request_bytes"]) == ("POST", "/classify", 415, 1, 12)


@pytest.mark.parametrize(("hops", "peer", "scheme"), [(0, "127.0.0.1", "http"), (1, "203.0.113.7", "https")])
def test_forwarded_headers_count_only_from_the_proxies_trusted_by_proxy_hops(
    seeded_weights: Path, capsys: pytest.CaptureFixture[str], hops: int, peer: str, scheme: str
) -> None:
    # The client forged the first address; the one proxy in front appended the real one.
    client = create_app({"MODEL_WEIGHTS": str(seeded_weights), "PROXY_HOPS": hops}).test_client()
    forwarded = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Forwarded-Proto": "https"}
    capsys.readouterr()
    response = client.get("/docs", headers=forwarded)
    assert response.headers["Location"].startswith(f"{scheme}://")
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["remote_addr"] == peer


def test_forwarded_text_that_is_no_address_or_scheme_is_not_taken(seeded_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # PROXY_HOPS counting more proxies than there are, or a pod reached directly: the headers are the client's.
    client = create_app({"MODEL_WEIGHTS": str(seeded_weights), "PROXY_HOPS": 1}).test_client()
    forged = {"X-Forwarded-For": "<b>" + "A" * 7000, "X-Forwarded-Proto": "javascript"}
    capsys.readouterr()
    response = client.get("/docs", headers=forged)
    assert response.headers["Location"].startswith("http://")
    line = capsys.readouterr().out.splitlines()[-1]
    assert json.loads(line)["remote_addr"] == "127.0.0.1"
    assert len(line) < 1000
