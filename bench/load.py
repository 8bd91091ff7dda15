"""A lean load generator: N clients posting photos to /classify for S seconds, in its own process.

Run as its own process (bench/run.py does) so that its CPU is not counted as the server's:
    python bench/load.py http://127.0.0.1:8000 --concurrency 4 --seconds 15 photo1.jpg photo2.jpg
Prints one JSON object: requests, images, errors, img/s, latency percentiles (ms), and the CPU
this client itself used (% of one CPU), which it takes from the same machine. The clients
are scripts/traffic.py's, which the load and fault runs use too; here the bodies are multipart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.traffic import Payload, Run, hammer


def multipart(files: list[Path]) -> Payload:
    boundary = uuid.uuid4().hex
    parts = []
    for file in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{file.name}"\r\nContent-Type: image/jpeg\r\n\r\n'
        parts.append(head.encode() + file.read_bytes() + b"\r\n")
    return Payload(b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}")


def run(url: str, payloads: list[Payload], images_per_request: int, concurrency: int, seconds: float) -> dict[str, float]:
    before = os.times()
    result = hammer(f"{url}/classify", payloads, clients=concurrency, seconds=seconds, timeout=60)
    after = os.times()
    answered = Run([outcome for outcome in result.outcomes if outcome.status == 200])
    ok = [outcome.seconds * 1000 for outcome in answered.outcomes]

    def percentile(fraction: float) -> float:
        return round(answered.percentile(fraction) * 1000, 1)

    return {
        "requests": len(result.outcomes),
        "images": len(ok) * images_per_request,
        "errors": len(result.outcomes) - len(ok),
        "seconds": round(result.seconds, 2),
        "img_per_s": round(len(ok) * images_per_request / result.seconds, 2),
        "p50_ms": percentile(0.50),
        "p95_ms": percentile(0.95),
        "p99_ms": percentile(0.99),
        "mean_ms": round(statistics.fmean(ok), 1) if ok else float("nan"),
        "client_cpu_pct": round(100 * (after.user + after.system - before.user - before.system) / result.seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--per-request", type=int, default=1, help="images in each request (a batch)")
    args = parser.parse_args()
    size = args.per_request
    payloads = [multipart(args.files[i : i + size]) for i in range(0, len(args.files) - size + 1, size)]
    print(json.dumps(run(args.url, payloads, size, args.concurrency, args.seconds)))


if __name__ == "__main__":
    main()
