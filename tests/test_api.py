"""The HTTP contract of /classify, /health and /model, through Flask's test client."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from tests.conftest import Photo, image_bytes, upload
from tests.hardening.answers import assert_error
from tests.hardening.corpus import BOUNDARY, Part, multipart
from tests.service import REPO


def test_multipart_upload_answers_top5_predictions(client: FlaskClient, jpeg: bytes) -> None:
    response = upload(client, ("image", jpeg, "tench.jpg"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["filename"] == "tench.jpg"
    assert len(body["predictions"]) == 5
    assert list(body["predictions"][0]) == ["label", "index", "probability"]
    probabilities = [p["probability"] for p in body["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < probabilities[0] <= 1
    assert body["image"] == {"width": 500, "height": 375, "format": "JPEG"}
    assert body["model"] == "resnet18"
    assert set(body["timing_ms"]) == {"decode", "model", "total"}


def test_field_named_file_is_accepted_too(client: FlaskClient, jpeg: bytes) -> None:
    assert upload(client, ("file", jpeg, "a.jpg")).status_code == 200


def test_raw_body_with_image_content_type(client: FlaskClient, jpeg: bytes) -> None:
    response = client.post("/classify", data=jpeg, content_type="image/jpeg")
    assert response.status_code == 200
    assert len(response.get_json()["predictions"]) == 5


def test_raw_body_as_octet_stream_names_its_file_from_content_disposition(client: FlaskClient, jpeg: bytes) -> None:
    response = client.post(
        "/classify", data=jpeg, content_type="application/octet-stream", headers={"Content-Disposition": 'attachment; filename="x.jpg"'}
    )
    assert response.status_code == 200 and response.get_json()["filename"] == "x.jpg"


def test_a_raw_body_named_in_utf8_keeps_its_name(client: FlaskClient, jpeg: bytes) -> None:
    # What a WSGI server hands over for the UTF-8 bytes of filename="猫.jpg": each byte as a latin-1 character.
    header = 'attachment; filename="猫.jpg"'.encode().decode("latin-1")
    response = client.post("/classify", data=jpeg, content_type="image/jpeg", headers={"Content-Disposition": header})
    assert response.get_json()["filename"] == "猫.jpg"


def test_files_in_both_image_and_file_fields_are_answered_in_upload_order(client: FlaskClient) -> None:
    png = image_bytes()
    sent = [("image", png, "1.png"), ("file", png, "2.png"), ("image", png, "3.png"), ("file", png, "4.png")]
    body = multipart(*(Part(field, content, name) for field, content, name in sent))
    response = client.post("/classify", data=body, content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert [entry["filename"] for entry in response.get_json()["results"]] == ["1.png", "2.png", "3.png", "4.png"]


def test_several_files_are_answered_in_upload_order(client: FlaskClient, photos: list[Photo], app: Flask) -> None:
    chosen = photos[:3]
    response = upload(client, *[("image", p.path.read_bytes(), p.path.name) for p in chosen])
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["filename"] for r in results] == [p.path.name for p in chosen]
    # Batched answers equal one-at-a-time answers.
    for photo, result in zip(chosen, results, strict=True):
        single = upload(client, ("image", photo.path.read_bytes(), photo.path.name)).get_json()
        assert [p["index"] for p in result["predictions"]] == [p["index"] for p in single["predictions"]]
        for batched, alone in zip(result["predictions"], single["predictions"], strict=True):
            assert batched["probability"] == pytest.approx(alone["probability"], abs=1e-5)


def test_decode_time_leaves_out_the_time_the_upload_took_to_arrive(client: FlaskClient, jpeg: bytes) -> None:
    class SlowBody(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            time.sleep(0.1)  # a slow client link
            return super().read(size)

    response = client.post("/classify", input_stream=SlowBody(jpeg), content_type="image/jpeg", content_length=len(jpeg))
    timing = response.get_json()["timing_ms"]
    assert timing["total"] - timing["decode"] - timing["model"] >= 100


def test_a_bad_file_among_good_ones_is_reported_in_its_place(client: FlaskClient, jpeg: bytes) -> None:
    response = upload(client, ("image", jpeg, "good.jpg"), ("image", b"not an image", "bad.jpg"), ("image", jpeg, "good2.jpg"))
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [("predictions" in r, "error" in r) for r in results] == [(True, False), (False, True), (True, False)]
    assert results[1] == {"filename": "bad.jpg", "error": {"code": "invalid_image", "message": results[1]["error"]["message"]}}
    assert "JPEG, PNG" in results[1]["error"]["message"]  # it says what would be read


def test_when_every_file_is_bad_the_request_fails_with_the_first_reason(client: FlaskClient) -> None:
    response = upload(client, ("image", b"nope", "a.txt"), ("image", b"", "b.jpg"))
    assert_error(response, 415, "invalid_image")
    assert [r["error"]["code"] for r in response.get_json()["results"]] == ["invalid_image", "empty_file"]


@pytest.mark.parametrize("where", ["query", "form"])
def test_topk_from_query_or_form(client: FlaskClient, jpeg: bytes, where: str) -> None:
    if where == "query":
        response = upload(client, ("image", jpeg, "a.jpg"), query="?topk=3")
    else:
        response = upload(client, ("image", jpeg, "a.jpg"), topk="3")
    assert len(response.get_json()["predictions"]) == 3


def test_topk_can_ask_for_every_class(client: FlaskClient, jpeg: bytes) -> None:
    response = client.post("/classify?topk=1000", data=jpeg, content_type="image/jpeg")
    assert len(response.get_json()["predictions"]) == 1000


@pytest.mark.parametrize("topk", ["0", "-1", "1001", str(10**9), "abc", "2.5", "1e3"])
def test_bad_topk_is_a_400(client: FlaskClient, jpeg: bytes, topk: str) -> None:
    assert_error(client.post(f"/classify?topk={topk}", data=jpeg, content_type="image/jpeg"), 400, "invalid_topk")


def test_no_file_is_a_400(client: FlaskClient) -> None:
    assert_error(client.post("/classify", data={}, content_type="multipart/form-data"), 400, "missing_image")
    assert_error(client.post("/classify"), 400, "missing_image")


def test_wrong_field_name_is_a_400_naming_the_fields_received(client: FlaskClient, jpeg: bytes) -> None:
    response = upload(client, ("photo", jpeg, "a.jpg"))
    assert_error(response, 400, "missing_image")
    assert "photo" in response.get_json()["error"]["message"]


def test_empty_file_is_a_400(client: FlaskClient) -> None:
    assert_error(upload(client, ("image", b"", "empty.jpg")), 400, "empty_file")
    assert_error(client.post("/classify", data=b"", content_type="image/png"), 400, "missing_image")


def test_not_an_image_is_a_415(client: FlaskClient) -> None:
    assert_error(upload(client, ("image", b"%PDF-1.7 a document", "doc.jpg")), 415, "unsupported_format")
    assert_error(upload(client, ("image", b"just some text", "notes.jpg")), 415, "invalid_image")


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"])
def test_other_content_types_are_a_415(client: FlaskClient, content_type: str) -> None:
    assert_error(client.post("/classify", data=b'{"a": 1}', content_type=content_type), 415, "unsupported_media_type")


def test_body_over_the_upload_limit_is_a_413(seeded_weights: Path) -> None:
    app = create_app({"MODEL_WEIGHTS": str(seeded_weights), "MAX_CONTENT_LENGTH": 1000})
    client = app.test_client()
    big = image_bytes("RGB", (300, 300), "BMP")
    assert_error(client.post("/classify", data=big, content_type="image/bmp"), 413, "payload_too_large")
    assert_error(upload(client, ("image", big, "big.bmp")), 413, "payload_too_large")


def test_image_over_the_pixel_limit_is_a_413(seeded_weights: Path) -> None:
    app = create_app({"MODEL_WEIGHTS": str(seeded_weights), "MAX_IMAGE_PIXELS": 10_000})
    response = app.test_client().post("/classify", data=image_bytes("RGB", (200, 100)), content_type="image/png")
    assert_error(response, 413, "image_too_large")


def test_more_files_than_the_limit_is_a_413(seeded_weights: Path) -> None:
    app = create_app({"MODEL_WEIGHTS": str(seeded_weights), "MAX_FILES": 2})
    small = image_bytes()
    assert_error(upload(app.test_client(), *[("image", small, f"{i}.png") for i in range(3)]), 413, "too_many_files")


def test_images_over_the_request_pixel_budget_together_are_a_413(seeded_weights: Path) -> None:
    app = create_app({"MODEL_WEIGHTS": str(seeded_weights), "MAX_IMAGE_PIXELS": 10_000, "MAX_REQUEST_PIXELS": 15_000})
    client = app.test_client()
    each = image_bytes("RGB", (100, 80))  # 8,000 pixels: within the per-image limit
    assert upload(client, ("image", each, "alone.png")).status_code == 200
    response = upload(client, ("image", each, "a.png"), ("image", each, "b.png"))
    assert_error(response, 413, "too_many_pixels")
    assert "16,000 pixels" in response.get_json()["error"]["message"]


def test_an_image_refused_for_its_own_size_does_not_count_against_the_request_budget(seeded_weights: Path) -> None:
    app = create_app({"MODEL_WEIGHTS": str(seeded_weights), "MAX_IMAGE_PIXELS": 10_000, "MAX_REQUEST_PIXELS": 15_000})
    good, oversized = image_bytes("RGB", (100, 80)), image_bytes("RGB", (120, 100))  # 8,000 and 12,000 pixels
    results = upload(app.test_client(), ("image", good, "good.png"), ("image", oversized, "big.png")).get_json()["results"]
    assert "predictions" in results[0] and results[1]["error"]["code"] == "image_too_large"


def test_huge_pngs_over_the_default_request_pixel_budget_are_a_413_not_decoded(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each 10000x10000 (the per-image limit) and about 32 KB; decoding 32 of them took minutes.
    huge = image_bytes("1", (10_000, 10_000), "PNG")
    capsys.readouterr()
    assert_error(upload(client, *[("image", huge, f"{i}.png") for i in range(3)]), 413, "too_many_pixels")
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["images"] == 3  # the files received, refused or not


@pytest.mark.parametrize(("reduced", "status"), [(True, 200), (False, 413)])
def test_large_jpegs_count_against_the_request_budget_at_their_decoded_scale(seeded_weights: Path, reduced: bool, status: int) -> None:
    # 4000x3000 decodes at 1/4 scale, 1000x750, when REDUCED_DECODE is on.
    app = create_app({"MODEL_WEIGHTS": str(seeded_weights), "REDUCED_DECODE": reduced, "MAX_REQUEST_PIXELS": 2 * 1000 * 750})
    photo = image_bytes("RGB", (4000, 3000), "JPEG")
    assert upload(app.test_client(), ("image", photo, "a.jpg"), ("image", photo, "b.jpg")).status_code == status


def test_unknown_route_is_a_json_404(client: FlaskClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")


def test_wrong_method_is_a_json_405_that_names_the_right_one(client: FlaskClient) -> None:
    # A browser's GET, or curl -T (a PUT).
    for method in ("GET", "PUT"):
        response = client.open("/classify", method=method)
        assert_error(response, 405, "method_not_allowed")
        assert "POST" in response.headers["Allow"]
        assert f"{method} is not accepted at /classify: use POST" in response.get_json()["error"]["message"]


def test_health_answers_once_the_model_is_loaded(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.get_json()["status"] == "ok"


def test_model_describes_architecture_weights_and_preprocessing(client: FlaskClient, seeded_weights: Path) -> None:
    body = client.get("/model").get_json()
    assert body["architecture"] == "resnet18" and body["num_classes"] == 1000
    assert body["weights"] == {
        "file": seeded_weights.name,
        "sha256": hashlib.sha256(seeded_weights.read_bytes()).hexdigest(),
        "source": "MODEL_WEIGHTS",
    }
    assert body["input_shape"] == [3, 224, 224]
    assert body["preprocessing"]["resize"] == 256 and body["preprocessing"]["center_crop"] == 224
    assert body["torch"].startswith("2.") and body["torchvision"].startswith("0.")
    assert body["threads"]["per_request"] >= 1


def test_a_request_of_many_large_images_holds_one_full_size_picture_per_thread_not_all_of_them(seeded_weights: Path) -> None:
    # 8 pictures of 25 megapixels in 280 KB: held all at once, decoded, they took 825 MB more than a
    # request of small ones; reduced to the model's input one at a time per thread, 285 MB.
    script = """
import io, sys
from PIL import Image
from app import create_app
from scripts.procs import peak_rss_bytes

def peak_mb():
    return peak_rss_bytes() // 2**20

def form(side):
    data = io.BytesIO()
    Image.new("L", (side, side), 128).save(data, "PNG")
    return {"image": [(io.BytesIO(data.getvalue()), f"{n}.png") for n in range(8)]}

client = create_app({"MODEL_WEIGHTS": sys.argv[1], "MAX_REQUEST_PIXELS": 10**9}).test_client()  # 200 M pixels below
assert client.post("/classify", data=form(600), content_type="multipart/form-data").status_code == 200
before = peak_mb()
assert client.post("/classify", data=form(5000), content_type="multipart/form-data").status_code == 200
print(peak_mb() - before)
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(seeded_weights)], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    )
    assert int(result.stdout.split()[-1]) < 500, f"{result.stdout.split()[-1]} MB more at the peak"
