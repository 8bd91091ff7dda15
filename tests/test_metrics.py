"""/metrics in one process, through the test client (tests/test_operations_server.py covers gunicorn's workers)."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.conftest import Photo, upload
from tests.prometheus_text import sample


def scrape(client: FlaskClient) -> str:
    return client.get("/metrics").get_data(as_text=True)


def test_metrics_are_prometheus_text(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain" and "version=" in response.content_type
    text = response.get_data(as_text=True)
    expected = {
        "classify_http_requests_total": "counter",
        "classify_http_request_duration_seconds": "histogram",
        "classify_inference_duration_seconds": "histogram",
        "classify_images_classified_total": "counter",
        "classify_images_rejected_total": "counter",
        "classify_upload_bytes": "histogram",
        "classify_model_info": "gauge",
    }
    for name, kind in expected.items():
        assert f"# TYPE {name} {kind}\n" in text


def test_requests_are_counted_by_route_and_status(client: FlaskClient) -> None:
    before = sample(scrape(client), "classify_http_requests_total", method="GET", route="/health", status="200")
    for _ in range(3):
        client.get("/health")
    assert sample(scrape(client), "classify_http_requests_total", method="GET", route="/health", status="200") == before + 3


def test_unknown_paths_share_one_route_label_whatever_the_path(client: FlaskClient) -> None:
    before = sample(scrape(client), "classify_http_requests_total", method="GET", route="unmatched", status="404")
    client.get("/a")
    client.get("/b/c")
    assert sample(scrape(client), "classify_http_requests_total", method="GET", route="unmatched", status="404") == before + 2
    assert "/b/c" not in scrape(client)


def test_classifying_counts_images_inference_and_bytes(client: FlaskClient, photos: list[Photo]) -> None:
    data = [photo.path.read_bytes() for photo in photos[:2]]
    images, batches, uploaded = (sample(scrape(client), name) for name in (
        "classify_images_classified_total", "classify_inference_duration_seconds_count", "classify_upload_bytes_sum"))  # fmt: skip
    rejected = sample(scrape(client), "classify_images_rejected_total", code="invalid_image")
    assert upload(client, ("image", data[0], "a.jpg"), ("image", data[1], "b.jpg"), ("image", b"text", "c.txt")).status_code == 200
    assert sample(scrape(client), "classify_images_classified_total") == images + 2
    assert sample(scrape(client), "classify_inference_duration_seconds_count") == batches + 1  # one batched forward pass
    assert sample(scrape(client), "classify_upload_bytes_sum") == uploaded + len(data[0]) + len(data[1]) + 4
    assert sample(scrape(client), "classify_images_rejected_total", code="invalid_image") == rejected + 1


def test_model_info_names_the_model_and_weights_served(client: FlaskClient) -> None:
    described = client.get("/model").get_json()
    assert (
        sample(
            scrape(client),
            "classify_model_info",
            architecture="resnet18",
            name="resnet18",
            precision="fp32",
            torch=described["torch"],
            torchvision=described["torchvision"],
            weights_file=described["weights"]["file"],
        )
        == 1
    )
