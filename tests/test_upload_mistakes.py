"""Mistakes people make when sending a photo: each answer says what went wrong and what to send."""

from __future__ import annotations

import gzip
import io

import pytest
from flask.testing import FlaskClient
from PIL import Image

import images
from app import create_app
from tests.conftest import image_bytes, upload
from tests.hardening.answers import assert_error
from tests.hardening.corpus import BOUNDARY, Part, multipart


def message(response, status: int, code: str) -> str:
    assert_error(response, status, code)
    return str(response.get_json()["error"]["message"])


FORM = f"multipart/form-data; boundary={BOUNDARY}"


def test_an_image_field_sent_as_text_says_to_send_a_file(client: FlaskClient) -> None:
    # curl -F 'image=<photo.jpg' (< instead of @), a Postman row left as Text, or a client library's
    # part given no filename (aiohttp's add_field, .NET's ByteArrayContent).
    body = multipart(Part("image", b"not a file part", filename=None))
    text = message(client.post("/classify", data=body, content_type=FORM), 400, "missing_image")
    assert "arrived as text" in text and "-F image=@" in text and "give the part a filename" in text


@pytest.mark.parametrize("disposition", ["form-data", "attachment"])  # curl writes "attachment" under a non-form type
def test_a_form_sent_with_an_image_content_type_says_to_drop_the_header(client: FlaskClient, jpeg: bytes, disposition: str) -> None:
    # curl -H 'Content-Type: image/jpeg' -F image=@photo.jpg: the form arrives as a "raw image".
    body = multipart(Part("image", jpeg, "photo.jpg")).replace(b"form-data;", f"{disposition};".encode())
    text = message(client.post("/classify", data=body, content_type="image/jpeg"), 400, "malformed_multipart")
    assert "multipart/form-data" in text and "do not set Content-Type" in text


def test_files_in_other_fields_are_refused_rather_than_left_out(client: FlaskClient, jpeg: bytes) -> None:
    response = upload(client, ("image", jpeg, "a.jpg"), ("photo", jpeg, "b.jpg"))
    assert "'photo'" in message(response, 400, "unexpected_field")


def test_an_image_field_sent_as_text_beside_a_file_is_refused_rather_than_left_out(client: FlaskClient, jpeg: bytes) -> None:
    # curl -F image=@a.jpg -F 'image=<b.jpg': the second photo was meant as a file too.
    body = multipart(Part("image", jpeg, "a.jpg"), Part("image", b"b.jpg", filename=None))
    text = message(client.post("/classify", data=body, content_type=FORM), 400, "unexpected_field")
    assert "'image' also arrived as text" in text and "-F image=@" in text


@pytest.mark.parametrize("disposition", ['form-data; name=""; filename="a.png"', 'form-data; filename="a.png"'])
def test_a_file_part_without_a_field_name_is_a_400_that_says_so_not_a_500(client: FlaskClient, jpeg: bytes, disposition: str) -> None:
    # curl -F '=@a.png' sends a part whose name is empty; other clients leave the name out.
    nameless = multipart(Part("x", jpeg)).replace(b'form-data; name="x"; filename="upload.jpg"', disposition.encode())
    alone = client.post("/classify", data=nameless, content_type=FORM)
    assert "the field ''" in message(alone, 400, "missing_image")
    beside = multipart(Part("image", jpeg), terminator=False) + nameless
    assert "the field ''" in message(client.post("/classify", data=beside, content_type=FORM), 400, "unexpected_field")


def test_field_names_quoted_back_are_bounded_in_number_and_length(client: FlaskClient, jpeg: bytes) -> None:
    names = [f"{n:03d}" + "x" * 800 for n in range(300)]
    for beside in ([], [Part("image", jpeg)]):  # no image: missing_image; beside one: unexpected_field
        body = multipart(*beside, *(Part(name, b"...") for name in names))
        response = client.post("/classify", data=body, content_type=FORM)
        text = response.get_json()["error"]["message"]
        assert response.status_code == 400 and len(text) < 1000
        assert "'000xxx" in text and "and 295 more" in text


def test_an_empty_file_input_in_another_field_is_ignored(client: FlaskClient, jpeg: bytes) -> None:
    # What a browser form sends for a file input nobody filled.
    body = multipart(Part("image", jpeg), Part("attachment", b"", filename=""))
    assert client.post("/classify", data=body, content_type=FORM).status_code == 200


def test_a_body_over_the_limit_is_told_the_limit(seeded_weights) -> None:
    client = create_app({"MODEL_WEIGHTS": str(seeded_weights), "MAX_CONTENT_LENGTH": 2**20}).test_client()
    response = client.post("/classify", data=b"\xff" * (2**20 + 1), content_type="image/jpeg")
    assert "at most 1 MiB" in message(response, 413, "payload_too_large")


def test_a_form_with_too_many_parts_is_told_so_not_that_the_body_is_too_large(client: FlaskClient, jpeg: bytes) -> None:
    body = multipart(Part("image", jpeg), *(Part(f"note{n}", b"x", filename=None) for n in range(1000)))
    assert len(body) < client.application.config["MAX_CONTENT_LENGTH"]
    text = message(client.post("/classify", data=body, content_type=FORM), 413, "payload_too_large")
    assert "more than 1000 parts" in text


@pytest.mark.parametrize(("fmt", "named"), [("ICO", "ICO"), ("PPM", "PNM"), ("JPEG2000", "JPEG 2000")])
def test_known_formats_that_are_not_served_are_named(client: FlaskClient, fmt: str, named: str) -> None:
    response = upload(client, ("image", image_bytes(fmt=fmt), "picture"))
    assert named in message(response, 415, "unsupported_format")


def test_heic_is_named_as_heic_alone(client: FlaskClient) -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    text = message(upload(client, ("image", heic, "IMG_0001.HEIC")), 415, "unsupported_format")
    assert text.startswith("HEIC/HEIF images are not supported")  # it used to say HEIC/HEIF/AVIF


@pytest.mark.parametrize("served", [True, False], ids=["Pillow with AVIF", "Pillow without AVIF"])
def test_an_avif_is_called_unsupported_only_where_avif_is_not_served(client: FlaskClient, monkeypatch, served: bool) -> None:
    # Pillow's wheels have AVIF here: without it is the same code path with AVIF left off the list.
    formats = [fmt for fmt in images.SUPPORTED_FORMATS if fmt != "AVIF"] + (["AVIF"] if served else [])
    monkeypatch.setattr(images, "SUPPORTED_FORMATS", formats)
    avif = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64  # the header box, no picture
    response = upload(client, ("image", avif, "photo.avif"))
    if served:
        message(response, 415, "invalid_image")  # a broken AVIF, not a format we refuse
    else:
        assert message(response, 415, "unsupported_format").startswith("AVIF images are not supported")


def test_a_phones_multi_picture_jpeg_is_reported_as_jpeg(client: FlaskClient) -> None:
    buffer = io.BytesIO()
    first, preview = Image.new("RGB", (320, 240), "teal"), Image.new("RGB", (160, 120), "teal")
    first.save(buffer, format="MPO", save_all=True, append_images=[preview])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    response = upload(client, ("image", buffer.getvalue(), "IMG_0002.JPG"))
    assert response.status_code == 200 and response.get_json()["image"]["format"] == "JPEG"


def test_topk_in_the_query_string_counts_over_the_form_and_empty_means_the_default(client: FlaskClient, jpeg: bytes) -> None:
    assert len(upload(client, ("image", jpeg, "a.jpg"), query="?topk=2", topk="4").get_json()["predictions"]) == 2
    assert len(upload(client, ("image", jpeg, "a.jpg"), query="?topk=").get_json()["predictions"]) == 5


def test_a_trailing_slash_on_classify_is_forgiven(client: FlaskClient, jpeg: bytes) -> None:
    response = client.post("/classify/", data={"image": (io.BytesIO(jpeg), "a.jpg")}, content_type="multipart/form-data")
    assert response.status_code == 200 and response.get_json()["predictions"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate, gzip", "br"])
def test_a_compressed_body_is_refused_for_its_encoding_not_read_as_a_bad_image(client: FlaskClient, jpeg: bytes, encoding: str) -> None:
    for body, content_type in ((gzip.compress(jpeg), "image/jpeg"), (gzip.compress(multipart(Part("image", jpeg))), FORM)):
        response = client.post("/classify", data=body, content_type=content_type, headers={"Content-Encoding": encoding})
        assert f"Content-Encoding {encoding!r} is not accepted" in message(response, 415, "unsupported_media_type")


def test_an_identity_content_encoding_is_read_as_it_is(client: FlaskClient, jpeg: bytes) -> None:
    assert client.post("/classify", data=jpeg, content_type="image/jpeg", headers={"Content-Encoding": "identity"}).status_code == 200


def test_a_filename_that_is_not_utf8_is_told_so_not_blamed_on_the_boundary(client: FlaskClient, jpeg: bytes) -> None:
    # Older clients send a Latin-1 "café.jpg" as the byte \xe9.
    body = multipart(Part("image", jpeg, "cafe.jpg")).replace(b"cafe.jpg", "caf\u00e9.jpg".encode("latin-1"))
    text = message(client.post("/classify", data=body, content_type=FORM), 400, "malformed_multipart")
    assert "not UTF-8" in text and "boundary" not in text
