"""Property-based: mutated real JPEGs and random bytes get a 200 or a JSON 4xx, and the server goes on.

Bounded: a few dozen examples each, a deadline per example; the whole file takes seconds.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests import service
from tests.conftest import shared_photos
from tests.hardening.answers import assert_no_internals
from tests.hardening.conftest import API_KEY

pytestmark = pytest.mark.usefixtures("watch_workers")

BOUNDED = settings(
    max_examples=30, deadline=timedelta(seconds=10), database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PHOTO = shared_photos()[1].path.read_bytes()
# Magic numbers so random bytes reach each format's decoder, not only the sniffing in front of them.
MAGIC = [b"", b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 "]


@st.composite
def mutated_jpeg(draw: st.DrawFn) -> bytes:
    """A real photo, changed the ways files get damaged: flipped bytes, cuts, inserts, repeats."""
    data = bytearray(PHOTO)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "zero", "repeat"]))
        where = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[where] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[where:]
        elif kind == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "zero":
            data[where : where + draw(st.integers(1, 4096))] = bytes(min(4096, len(data) - where))
        else:
            data[where:where] = data[where : where + draw(st.integers(1, 2048))]
        if not data:
            break
    return bytes(data)


random_upload = st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=4096))


def check(status: int, is_json: bool, body: bytes) -> None:
    event(f"status {status}")
    assert status == 200 or 400 <= status < 500, body[:300]
    assert is_json
    if status != 200:
        assert_no_internals(body)


@BOUNDED
@given(data=st.one_of(mutated_jpeg(), random_upload), multipart=st.booleans())
def test_the_app_answers_any_upload_with_a_200_or_a_json_4xx(hardened_client: FlaskClient, data: bytes, multipart: bool) -> None:
    if multipart:
        import io

        response = hardened_client.post(
            "/classify", data={"image": (io.BytesIO(data), "x.jpg")}, headers={"X-API-Key": API_KEY}, content_type="multipart/form-data"
        )
    else:
        response = hardened_client.post("/classify", data=data, content_type="image/jpeg", headers={"X-API-Key": API_KEY})
    check(response.status_code, response.is_json, response.get_data())


@BOUNDED
@given(data=st.one_of(mutated_jpeg(), random_upload))
def test_the_real_server_answers_any_upload_and_then_the_next_request(live: service.Service, data: bytes) -> None:
    headers = {"Content-Type": "image/jpeg", "X-API-Key": API_KEY}
    response = requests.post(f"{live.url}/classify", data=data, headers=headers, timeout=30)
    check(response.status_code, response.headers.get("Content-Type") == "application/json", response.content)
    assert requests.get(f"{live.url}/health", timeout=30).status_code == 200
