"""Real accuracy end to end: a real ImageNet model served through MODEL_FACTORY, over HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests import service
from tests.conftest import Photo


def test_efficientnet_lite0_served_by_factory_is_accurate_on_the_shared_photos(tmp_path: Path, photos: list[Photo]) -> None:
    with service.running(tmp_path / "log", {"MODEL_FACTORY": "tests.efficientnet_lite:build"}, workers=2) as server:

        def top5(photo: Photo) -> list[int]:
            response = requests.post(f"{server.url}/classify", files={"image": (photo.path.name, photo.path.read_bytes())}, timeout=60)
            assert response.status_code == 200, response.text
            return [p["index"] for p in response.json()["predictions"]]

        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(top5, photos))
        model = requests.get(f"{server.url}/model", timeout=30).json()

    top1 = sum(answer[0] == photo.class_index for answer, photo in zip(answers, photos, strict=True)) / len(photos)
    top5_rate = sum(photo.class_index in answer for answer, photo in zip(answers, photos, strict=True)) / len(photos)
    print(f"EfficientNet-Lite0 over HTTP on {len(photos)} photos: top-1 {top1:.3f}, top-5 {top5_rate:.3f}")
    assert top1 >= 0.85
    assert top5_rate >= 0.95
    assert model["name"] == "tests.efficientnet_lite:build" and model["num_classes"] == 1000
