"""A photo stored sideways with an EXIF orientation is classified as it is shown: upright."""

from __future__ import annotations

import io

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from tests import service
from tests.hardening.conftest import API_KEY
from tests.hardening.corpus import encode_oriented

T = Image.Transpose
# EXIF orientation -> how to store an upright picture so that the tag turns it back.
STORE = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}


def probabilities(answer: dict) -> dict[int, float]:
    return {p["index"]: p["probability"] for p in answer["predictions"]}


def distance(a: dict[int, float], b: dict[int, float]) -> float:
    return sum(abs(a[i] - b[i]) for i in a)


@pytest.fixture(scope="module")
def upright(jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(jpeg)).convert("RGB")


@pytest.fixture(scope="module")
def upright_answer(hardened_app: Flask, upright: Image.Image) -> dict:
    return classify(hardened_app.test_client(), encode_oriented(upright, "PNG"), "image/png")


def classify(client: FlaskClient, data: bytes, content_type: str) -> dict:
    response = client.post("/classify?topk=1000", data=data, content_type=content_type, headers={"X-API-Key": API_KEY})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


@pytest.mark.parametrize("orientation", sorted(STORE))
def test_every_exif_orientation_gives_exactly_the_upright_answer(
    hardened_client: FlaskClient, upright: Image.Image, upright_answer: dict, orientation: int
) -> None:
    # PNG is lossless, so the turned-back pixels are the upright ones and the answers must be equal.
    stored = encode_oriented(upright.transpose(STORE[orientation]), "PNG", orientation)
    answer = classify(hardened_client, stored, "image/png")
    assert (answer["image"]["width"], answer["image"]["height"]) == upright.size
    assert answer["predictions"] == upright_answer["predictions"]


def test_a_sideways_jpeg_is_classified_like_the_upright_one_over_http(live: service.Service, upright: Image.Image) -> None:
    def classify_http(data: bytes) -> dict:
        response = requests.post(
            f"{live.url}/classify?topk=1000", data=data, timeout=60, headers={"Content-Type": "image/jpeg", "X-API-Key": API_KEY}
        )
        assert response.status_code == 200, response.text
        return response.json()

    upright_answer = probabilities(classify_http(encode_oriented(upright, "JPEG")))
    sideways = upright.transpose(T.ROTATE_90)
    with_tag = classify_http(encode_oriented(sideways, "JPEG", orientation=6))
    without_tag = probabilities(classify_http(encode_oriented(sideways, "JPEG")))
    assert (with_tag["image"]["width"], with_tag["image"]["height"]) == upright.size
    # JPEG re-encoding moves the numbers a little; ignoring the tag moves them a lot (the control).
    assert distance(probabilities(with_tag), upright_answer) < distance(without_tag, upright_answer) / 5
