"""A lean load generator: N client threads posting photos to /classify for S seconds.

Run as its own process (bench/run.py does) so its CPU is not the server's:
    python bench/load.py http://127.0.0.1:8000 --concurrency 4 --seconds 15 photo1.jpg photo2.jpg
Prints one JSON object: requests, images, errors, img/s, latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import statistics
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse


def multipart(files: list[Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for file in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{file.name}"\r\nContent-Type: image/jpeg\r\n\r\n'
        parts.append(head.encode() + file.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(url: str, bodies: list[tuple[bytes, str, int]], concurrency: int, seconds: float, timeout: float = 60) -> dict[str, float]:
    target = urlparse(url)
    next_body = itertools.cycle(bodies).__next__
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"requests": 0, "images": 0, "errors": 0}
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                body, content_type, images = next_body()
            started = time.perf_counter()
            try:
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=timeout)
                connection.request("POST", "/classify", body, {"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
                connection.close()
            except OSError:
                ok = False
            elapsed = time.perf_counter() - started
            with lock:
                counts["requests"] += 1
                if ok:
                    counts["images"] += images
                    latencies.append(elapsed * 1000)
                else:
                    counts["errors"] += 1

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - began
    return {
        **counts,
        "seconds": round(wall, 2),
        "img_per_s": round(counts["images"] / wall, 2),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--per-request", type=int, default=1, help="images in each request (a batch)")
    args = parser.parse_args()
    groups = [args.files[i : i + args.per_request] for i in range(0, len(args.files) - args.per_request + 1, args.per_request)]
    bodies = [(*multipart(group), len(group)) for group in groups]
    print(json.dumps(run(args.url, bodies, args.concurrency, args.seconds)))


if __name__ == "__main__":
    main()
