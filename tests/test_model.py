"""The model wrapper: same numbers as torchvision's reference pipeline, clear load errors."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from flask import Flask
from PIL import Image
from torchvision.models import ResNet18_Weights

import model_loader
from app import create_app
from images import decode_image
from model import ModelLoadError, ModelSpec
from model_loader import IMAGENET_LABELS, load_classifier
from scripts import harness
from settings import ConfigError
from tests.conftest import Photo


def reference_logits(weights_file: Path, paths: list[Path]) -> torch.Tensor:
    """torchvision's own pipeline: PIL convert("RGB"), weights.transforms(), the plain model."""
    model = torchvision.models.resnet18()
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    transforms = ResNet18_Weights.IMAGENET1K_V1.transforms()
    batch = torch.stack([transforms(Image.open(path).convert("RGB")) for path in paths])
    with torch.inference_mode():
        return model.eval()(batch)


def test_logits_equal_torchvision_reference_on_every_shared_photo(app: Flask, photos: list[Photo], seeded_weights: Path) -> None:
    classifier = app.extensions["classifier"]
    worst = 0.0
    for start in range(0, len(photos), 20):
        paths = [photo.path for photo in photos[start : start + 20]]
        ours = classifier.logits([decode_image(path.read_bytes(), app.config["MAX_IMAGE_PIXELS"]).image for path in paths])
        worst = max(worst, (ours - reference_logits(seeded_weights, paths)).abs().max().item())
    assert worst < 1e-4


def test_imagenet_classes_file_is_torchvisions_category_list() -> None:
    assert IMAGENET_LABELS.read_text().splitlines() == ResNet18_Weights.IMAGENET1K_V1.meta["categories"]


def test_predictions_are_sorted_softmax_probabilities(app: Flask, photos: list[Photo]) -> None:
    classifier = app.extensions["classifier"]
    image = decode_image(photos[0].path.read_bytes(), 10**8).image
    top = classifier.predict([image], topk=1000)[0]
    probabilities = [p.probability for p in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert sorted(p.index for p in top) == list(range(1000))


def test_model_is_built_once_per_process(seeded_weights: Path) -> None:
    first = create_app({"MODEL_WEIGHTS": str(seeded_weights)})
    second = create_app({"MODEL_WEIGHTS": str(seeded_weights)})
    assert first.extensions["classifier"] is second.extensions["classifier"]


@pytest.fixture
def cats_and_dogs(tmp_path: Path) -> tuple[Path, Path]:
    """A fine-tuned head of two classes: its weights file and its labels file."""
    torch.manual_seed(1)
    weights = tmp_path / "cats-dogs.pth"
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), weights)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    return weights, labels


def test_fine_tuned_head_takes_its_class_count_from_the_labels_file(cats_and_dogs: tuple[Path, Path]) -> None:
    weights, labels = cats_and_dogs
    classifier = load_classifier(ModelSpec(weights_file=str(weights), labels_file=str(labels)))
    top = classifier.predict([Image.new("RGB", (300, 200), "orange")], topk=2)[0]
    assert {p.label for p in top} == {"cat", "dog"}


def test_default_topk_fits_the_model_cut_when_built_in_refused_when_set(cats_and_dogs: tuple[Path, Path]) -> None:
    weights, labels = cats_and_dogs
    small = {"MODEL_WEIGHTS": str(weights), "LABELS_FILE": str(labels)}
    app = create_app(small)  # the built-in 5
    assert app.config["DEFAULT_TOPK"] == 2
    assert app.test_client().get("/model").get_json()["limits"]["default_topk"] == 2
    with pytest.raises(ConfigError, match="DEFAULT_TOPK=3 is more than the model's 2 classes"):
        create_app({**small, "DEFAULT_TOPK": 3})


def test_checkpoint_dicts_and_dataparallel_prefixes_are_unwrapped(tmp_path: Path, seeded_weights: Path) -> None:
    state = torch.load(seeded_weights, weights_only=True)
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "model": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    classifier = load_classifier(ModelSpec(weights_file=str(wrapped)))
    assert classifier.num_classes == 1000


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ModelSpec(weights_file="/nonexistent/weights.pth"), "no such file"),
        (ModelSpec(arch="not_a_model"), "not a torchvision classification model"),
        (ModelSpec(torchvision_weights="IMAGENET9K"), "not a weights entry"),
        (ModelSpec(torchvision_weights="ResNet50_Weights.IMAGENET1K_V1"), "not a weights entry"),  # another model's
        (ModelSpec(factory="no_such_module:build"), "could not be imported"),
        (ModelSpec(factory="missing_colon"), "package.module:function"),
        (ModelSpec(labels_file="/nonexistent/labels.txt"), "could not be read"),
    ],
)
def test_load_errors_say_what_is_wrong(spec: ModelSpec, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_classifier(spec)


def test_a_labels_file_that_is_not_utf8_is_refused_clearly(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ModelLoadError, match="is not UTF-8 text"):
        model_loader.read_labels(labels)


def test_weights_that_do_not_fit_the_architecture_are_refused(seeded_weights: Path) -> None:
    with pytest.raises(ModelLoadError, match="do not fit resnet34"):
        load_classifier(ModelSpec(arch="resnet34", weights_file=str(seeded_weights)))


def test_a_pickle_that_is_not_weights_only_is_refused(tmp_path: Path) -> None:
    unsafe = tmp_path / "model.pth"
    torch.save(torchvision.models.resnet18(), unsafe)  # a whole pickled module, not a state dict
    with pytest.raises(ModelLoadError, match="weights-only state dict"):
        load_classifier(ModelSpec(weights_file=str(unsafe)))


def test_labels_that_do_not_match_the_head_are_refused(tmp_path: Path, seeded_weights: Path) -> None:
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n")
    with pytest.raises(ModelLoadError, match="do not fit resnet18 with 3 classes"):
        load_classifier(ModelSpec(weights_file=str(seeded_weights), labels_file=str(labels)))


def test_missing_torchvision_weights_with_downloads_off_explain_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError) as error:
        load_classifier(ModelSpec(download=False))
    message = str(error.value)
    assert "resnet18-f37072fd.pth" in message and "MODEL_WEIGHTS" in message and "TORCH_HOME" in message


def cache_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, content: bytes) -> Path:
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / name).write_bytes(content)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return checkpoints / name


def test_torchvision_cache_is_used_the_standard_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seeded_weights: Path, fresh_classifier_cache: None
) -> None:
    # A file under $TORCH_HOME/hub/checkpoints with torchvision's name is loaded without any download.
    # The real file cannot be had here: the entry's URL names the seeded file, by its own hash prefix.
    content = seeded_weights.read_bytes()
    name = f"resnet18-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", f"https://download.pytorch.org/models/{name}")
    cached = cache_with(tmp_path, monkeypatch, name, content)
    classifier = load_classifier(ModelSpec(download=False))
    assert classifier.weights_path == cached
    assert classifier.describe()["weights"]["source"] == "torchvision ResNet18_Weights.IMAGENET1K_V1"


def test_a_cached_file_that_is_not_the_one_its_name_promises_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seeded_weights: Path, forget_preload: None
) -> None:
    # torch.hub checks the hash only when it downloads; a file put there by hand is checked too.
    cache_with(tmp_path, monkeypatch, "resnet18-f37072fd.pth", seeded_weights.read_bytes())
    with pytest.raises(ModelLoadError, match="sha256 does not start with f37072fd"):
        model_loader.preload(ModelSpec(download=False))


@pytest.fixture
def own_weights(tmp_path: Path, seeded_weights: Path) -> Path:
    """A copy of the seeded weights that a test may replace, as an operator would."""
    weights = tmp_path / "weights.pth"
    weights.write_bytes(seeded_weights.read_bytes())
    return weights


@pytest.fixture
def forget_preload() -> Iterator[None]:
    """Forget, after the test, what model_loader.preload kept."""
    yield
    model_loader._preloaded = None


def test_workers_use_the_weights_the_master_preloaded_without_a_copy(own_weights: Path, seeded_weights: Path, forget_preload: None) -> None:
    spec = ModelSpec(weights_file=str(own_weights))
    model_loader.preload(spec)  # what the gunicorn master does before forking
    assert model_loader._preloaded is not None and model_loader._preloaded.state_dict is not None
    preloaded = {t.untyped_storage().data_ptr() for t in model_loader._preloaded.state_dict.values()}
    built = [*load_classifier(spec).module.parameters()]
    shared = sum(p.numel() for p in built if p.untyped_storage().data_ptr() in preloaded)
    assert shared / sum(p.numel() for p in built) > 0.98  # all but the 1x1 convolutions' few KB
    expected = torch.load(seeded_weights, weights_only=True)["conv1.weight"]
    assert torch.equal(load_classifier(spec).module.get_parameter("conv1.weight"), expected)


def test_a_worker_built_after_the_weights_file_changed_still_serves_what_the_master_read(
    tmp_path: Path, own_weights: Path, seeded_weights: Path, forget_preload: None
) -> None:
    # A replacement for a crashed worker, after an operator put new weights in place but before
    # any SIGHUP: it must serve the model the other workers serve, and say so in GET /model.
    spec = ModelSpec(weights_file=str(own_weights))
    model_loader.preload(spec)
    harness.seeded_weights(tmp_path / "new.pth", seed=1).replace(own_weights)
    classifier = load_classifier(spec)
    expected = torch.load(seeded_weights, weights_only=True)["fc.bias"]
    assert torch.equal(classifier.module.get_parameter("fc.bias"), expected)
    assert classifier.weights_sha256 == hashlib.sha256(seeded_weights.read_bytes()).hexdigest()


def test_a_preload_of_unusable_weights_keeps_the_previous_one(own_weights: Path, seeded_weights: Path, forget_preload: None) -> None:
    # A SIGHUP with a broken file: the new workers keep serving, with the weights read before.
    spec = ModelSpec(weights_file=str(own_weights))
    model_loader.preload(spec)
    own_weights.write_bytes(b"half a file")
    with pytest.raises(ModelLoadError):
        model_loader.preload(spec)
    assert torch.equal(load_classifier(spec).module.get_parameter("fc.bias"), torch.load(seeded_weights, weights_only=True)["fc.bias"])


@pytest.mark.parametrize("target", ["no_such_module:build", "tests.no_such_module:build", "no_colon"])
def test_the_master_refuses_a_factory_module_it_cannot_find(target: str, forget_preload: None) -> None:
    # One clear refusal from gunicorn's master, not one per worker racing to fail.
    with pytest.raises(ModelLoadError, match="MODEL_FACTORY"):
        model_loader.preload(ModelSpec(factory=target))


def test_the_master_runs_no_code_of_the_factory_module_or_its_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_preload: None
) -> None:
    # An import may build a model, i.e. run torch compute, which the forked workers would hang on.
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('the master ran this')\n")
    (package / "models.py").write_text("raise RuntimeError('the master ran this')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model_loader.preload(ModelSpec(factory="userpkg.models:build"))
    assert "userpkg" not in sys.modules and "userpkg.models" not in sys.modules
    with pytest.raises(ModelLoadError, match=r"no module named 'userpkg\.other'"):
        model_loader.preload(ModelSpec(factory="userpkg.other:build"))
