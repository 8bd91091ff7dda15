"""What the load and chaos runs share: real photos as payloads, seeded weights, a fresh service."""

from __future__ import annotations

import os
from pathlib import Path

from scripts.traffic import Payload
from tests.conftest import shared_photos


def photo_payloads(count: int = 50) -> list[Payload]:
    """The first `count` shared photos, as raw JPEG bodies."""
    return [Payload(photo.path.read_bytes()) for photo in shared_photos()[:count]]


def seeded_weights(path: Path, seed: int) -> Path:
    """A resnet18 state dict with seeded random weights (no download is possible here).

    Runs torch in this process; it only ever starts servers with fork+exec, which is safe.
    """
    import torch
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def weights_for_run(folder: Path) -> Path:
    """MODEL_WEIGHTS if set (real weights), else seeded random weights: same speed, same memory."""
    given = os.environ.get("MODEL_WEIGHTS")
    return Path(given) if given else seeded_weights(folder / "resnet18-seed0.pth", 0)
