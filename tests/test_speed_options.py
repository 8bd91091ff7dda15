"""The speed machinery: per-request thread budget, bf16, and their effect on answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

import cpu_budget
from app import create_app
from model import ModelSpec, bf16_supported, load_classifier
from tests.conftest import Photo


@pytest.fixture
def budget() -> Iterator[None]:
    cpu_budget.install(cpus=4, slots=4)
    for slot in range(4):
        cpu_budget.release(slot)
    cpu_budget.attach(0)
    yield
    cpu_budget.attach(-1)  # detach: back to the fixed thread count


def test_a_lone_request_gets_every_cpu(budget: None) -> None:
    with cpu_budget.busy():
        assert cpu_budget.threads(default=2) == 4


def test_busy_workers_split_the_cpus(budget: None) -> None:
    cpu_budget._flags[1] = 1  # another worker is busy
    with cpu_budget.busy():
        assert cpu_budget.threads(default=2) == 2
    cpu_budget._flags[2] = cpu_budget._flags[3] = 1
    with cpu_budget.busy():
        assert cpu_budget.threads(default=2) == 1  # four busy on four CPUs: one each, never zero


def test_a_dead_workers_slot_is_released(budget: None) -> None:
    cpu_budget._flags[3] = 1
    cpu_budget.release(3)
    assert cpu_budget.threads(default=2) == 4
    assert cpu_budget.free_slot({0, 1}) == 2


def test_without_gunicorn_the_fixed_thread_count_is_used() -> None:
    assert not cpu_budget.shared()
    assert cpu_budget.threads(default=3) == 3


def test_parallel_map_keeps_order() -> None:
    assert cpu_budget.map_parallel(lambda x: x * x, list(range(11)), threads=3) == [x * x for x in range(11)]


def test_bf16_without_cpu_support_serves_fp32_and_says_so(seeded_weights: Path) -> None:
    if bf16_supported():
        pytest.skip("this CPU has native bf16; the fallback cannot be observed here")
    app = create_app({"MODEL_WEIGHTS": str(seeded_weights), "PRECISION": "bf16"})
    assert app.test_client().get("/model").get_json()["precision"] == "fp32"


def test_bf16_agrees_with_fp32_on_top1_for_a_real_model(photos: list[Photo]) -> None:
    if not bf16_supported():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX); bf16 is served as fp32 here")
    fp32 = load_classifier(ModelSpec(factory="tests.efficientnet_lite:build"))
    bf16 = load_classifier(ModelSpec(factory="tests.efficientnet_lite:build", precision="bf16"))
    images = [Image.open(photo.path).convert("RGB") for photo in photos]
    agree = 0
    for start in range(0, len(images), 25):
        batch = images[start : start + 25]
        agree += sum(a[0].index == b[0].index for a, b in zip(fp32.predict(batch, 1), bf16.predict(batch, 1)))
    assert agree / len(images) >= 0.99
