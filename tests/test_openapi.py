"""The OpenAPI document: valid OpenAPI 3, the same routes as the app, and true to real responses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

import images
from app import create_app
from tests.conftest import upload

AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}  # werkzeug adds them to every rule


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.is_json
    return response.get_json()  # type: ignore[no-any-return]


def is_asset_route(rule: str) -> bool:
    """Folders of files (Swagger UI's, the demo page's), not operations of the API."""
    return rule.endswith("<path:path>") or rule.endswith("<path:filename>")


def app_operations(app: Flask) -> set[tuple[str, str]]:
    operations = set()
    for rule in app.url_map.iter_rules():
        if is_asset_route(rule.rule):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        operations |= {(path, method.lower()) for method in rule.methods or () if method not in AUTOMATIC_METHODS}
    return operations


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, operations in document["paths"].items() for method in operations}


def test_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    validate(document)


def test_every_route_of_the_app_is_documented_and_nothing_else(app: Flask, document: dict[str, Any]) -> None:
    assert documented_operations(document) == app_operations(app)


def test_asset_routes_left_out_of_the_document_do_serve_files(app: Flask, client: FlaskClient) -> None:
    assets = sorted(rule.rule for rule in app.url_map.iter_rules() if is_asset_route(rule.rule))
    assert "/docs/<path:path>" in assets and "/demo/<path:filename>" in assets
    assert client.get("/docs/swagger-ui.css").status_code == 200
    assert client.get("/demo/demo.js").status_code == 200


def test_document_states_this_servers_limits(seeded_weights: Path) -> None:
    app = create_app({"TESTING": True, "MODEL_WEIGHTS": str(seeded_weights), "MAX_FILES": 3, "DEFAULT_TOPK": 7})
    document = app.test_client().get("/openapi.json").get_json()
    classify = document["paths"]["/classify"]["post"]
    query_topk = next(p for p in classify["parameters"] if p.get("name") == "topk")
    assert (query_topk["schema"]["minimum"], query_topk["schema"]["maximum"]) == (1, 1000)
    assert "default 7" in query_topk["description"]
    form_topk = classify["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["topk"]
    assert (form_topk["minimum"], form_topk["maximum"], form_topk["default"]) == (1, 1000, 7)
    assert classify["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["image"]["maxItems"] == 3


def test_swagger_ui_fills_in_topk_only_in_the_form_so_editing_it_there_counts(document: dict[str, Any]) -> None:
    # Swagger UI fills every parameter that has a default; the query string's topk overrides the form's.
    query_topk = next(p for p in document["paths"]["/classify"]["post"]["parameters"] if p.get("name") == "topk")
    assert "default" not in query_topk["schema"]


def test_document_names_the_formats_this_server_reads(document: dict[str, Any]) -> None:
    assert f"Supported: {images.SUPPORTED_NAMES}." in document["paths"]["/classify"]["post"]["description"]


def test_document_describes_both_upload_forms(document: dict[str, Any]) -> None:
    content = document["paths"]["/classify"]["post"]["requestBody"]["content"]
    multipart = content["multipart/form-data"]["schema"]["properties"]
    assert multipart["image"]["items"] == {"type": "string", "format": "binary"}
    # One file field in the form: with `file` beside it, Swagger UI sent a placeholder text in the
    # untouched `image` array (and an empty `file`), which the service refuses. `file` is in the text.
    assert set(multipart) == {"image", "topk"}
    assert "(or `file`)" in document["paths"]["/classify"]["post"]["description"]
    assert content["image/*"]["schema"]["format"] == "binary"
    assert content["application/octet-stream"]["schema"]["format"] == "binary"


def schema_validator(document: dict[str, Any], path: str, method: str, status: int) -> OAS30Validator:
    schema = document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    return OAS30Validator({**schema, "components": document["components"]})


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("one photo", 200),
        ("several photos, one bad", 200),
        ("raw body", 200),
        ("no image", 400),
        ("bad topk", 400),
        ("not an image", 415),
        ("several files, all bad", 415),
        ("too many files", 413),
    ],
)
def test_real_classify_responses_match_the_documented_schemas(
    seeded_weights: Path, document: dict[str, Any], jpeg: bytes, case: str, status: int
) -> None:
    client = create_app({"TESTING": True, "MODEL_WEIGHTS": str(seeded_weights), "MAX_FILES": 3}).test_client()
    requests_by_case = {
        "one photo": lambda: upload(client, ("image", jpeg, "a.jpg")),
        "several photos, one bad": lambda: upload(client, ("image", jpeg, "a.jpg"), ("image", b"hello", "notes.txt")),
        "raw body": lambda: client.post("/classify?topk=2", data=jpeg, content_type="image/jpeg"),
        "no image": lambda: client.post("/classify", data={"topk": "3"}, content_type="multipart/form-data"),
        "bad topk": lambda: upload(client, ("image", jpeg, "a.jpg"), query="?topk=abc"),
        "not an image": lambda: client.post("/classify", data=b"hello", content_type="image/png"),
        "several files, all bad": lambda: upload(client, ("image", b"x", "a.txt"), ("image", b"y", "b.txt")),
        "too many files": lambda: upload(client, *[("image", jpeg, f"{i}.jpg") for i in range(4)]),
    }
    response = requests_by_case[case]()
    assert response.status_code == status
    schema_validator(document, "/classify", "post", status).validate(response.get_json())


@pytest.mark.parametrize("path", ["/health", "/model"])
def test_real_health_and_model_responses_match_the_documented_schemas(client: FlaskClient, document: dict[str, Any], path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    schema_validator(document, path, "get", 200).validate(response.get_json())


def test_documented_schemas_can_reject_a_wrong_answer(document: dict[str, Any]) -> None:
    # The check above means something only if the schema is strict enough to fail.
    wrong = {"filename": "a.jpg", "predictions": [{"label": "x", "index": 1, "probability": 7}], "image": {}, "model": "m"}
    assert not schema_validator(document, "/classify", "post", 200).is_valid(wrong)
