"""The model alone: forward passes on a preprocessed image, no HTTP, no decoding.

    python bench/raw.py --processes 2 --threads 1 --seconds 10
Starts the processes fresh (no fork after torch work), each building the same model the service
serves (same environment variables, same optimisations and precision), and prints JSON:
total img/s and the median latency of one forward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def photos_dir() -> Path:
    """BENCH_PHOTOS if set (bench/run.py sets it), else the shared photos beside the checkout."""
    given = os.environ.get("BENCH_PHOTOS")
    return Path(given) if given else Path(os.environ.get("SHARED_DIR", REPO.parent / "shared")) / "images" / "imagenet-samples"


def phone_size(path: Path) -> Image.Image:
    """A shared photo upscaled to 4000x3000, a phone camera's size (bicubic, like a camera's detail)."""
    from PIL import Image

    return Image.open(path).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)


def one_process(threads: int, seconds: float, batch: int) -> dict[str, float]:
    import torch
    from PIL import Image

    import settings
    from model import ModelSpec, set_threads
    from model_loader import load_classifier

    set_threads(threads)
    classifier = load_classifier(ModelSpec.from_settings(settings.load()))
    sample = classifier.preprocess(Image.open(sorted(photos_dir().glob("*.JPEG"))[0]).convert("RGB"))
    inputs = torch.stack([sample] * batch)
    for _ in range(3):
        classifier._forward(inputs)
    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        classifier._forward(inputs)
        times.append(time.perf_counter() - started)
    return {"img_per_s": batch * len(times) / sum(times), "median_ms": statistics.median(times) * 1000}


def decode_cost(limit: int = 200) -> dict[str, float]:
    """Median ms to decode and preprocess one shared photo, on one thread, as a request does."""
    import settings
    from images import decode_image
    from model import ModelSpec, set_threads
    from model_loader import load_classifier

    set_threads(1)
    classifier = load_classifier(ModelSpec.from_settings(settings.load()))
    times = []
    for path in sorted(photos_dir().glob("*.JPEG"))[:limit]:
        data = path.read_bytes()
        started = time.perf_counter()
        classifier.preprocess(decode_image(data, 10**9, classifier.decode_min_side).image)
        times.append(time.perf_counter() - started)
    return {"decode_preprocess_ms": round(statistics.median(times) * 1000, 2)}


def measure(processes: int, threads: int, seconds: float, batch: int = 1) -> dict[str, float]:
    command = [sys.executable, __file__, "--one", "--threads", str(threads), "--seconds", str(seconds), "--batch", str(batch)]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    results = [json.loads(child.communicate()[0]) for child in children]
    return {
        "processes": processes,
        "threads": threads,
        "img_per_s": round(sum(r["img_per_s"] for r in results), 2),
        "median_ms": round(statistics.median(r["median_ms"] for r in results), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--decode", action="store_true", help="median decode + preprocess time instead")
    args = parser.parse_args()
    if args.decode:
        print(json.dumps(decode_cost()))
    elif args.one:
        print(json.dumps(one_process(args.threads, args.seconds, args.batch)))
    else:
        print(json.dumps(measure(args.processes, args.threads, args.seconds, args.batch)))


if __name__ == "__main__":
    main()
