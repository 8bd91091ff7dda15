"""`make load`: sustained concurrency and memory over many requests, against a fresh service.

    python -m scripts.load             # 64 clients x 60 s, then 10,000 requests (about 10 min)
    python -m scripts.load --short     # the same, scaled down to about a minute

Starts `make run` on a free loopback port with two workers, prints a table, stops the server.
Exits non-zero if a guarantee in RELIABILITY.md is broken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from scripts.harness import photo_payloads, weights_for_run
from scripts.load_scenarios import LOAD_HEADER, MEMORY_HEADER, memory_soak, sustained_load
from scripts.traffic import table
from tests import service


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="a scaled-down run")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--requests", type=int, default=None, help="requests for the memory run, after the warm-up")
    args = parser.parse_args()
    seconds = args.seconds or (10 if args.short else 60)
    total = args.requests or (1000 if args.short else 10_000)
    warmup = max(100, total // 10)

    with tempfile.TemporaryDirectory(prefix="classify-load-") as folder:
        weights = weights_for_run(Path(folder))
        with service.running(Path(folder) / "gunicorn.log", {"MODEL_WEIGHTS": str(weights)}, workers=2) as running:
            print(f"service at {running.url}, 2 workers; {args.clients} clients for {seconds:g}s ...", flush=True)
            load = sustained_load(running, photo_payloads(), args.clients, seconds)
            print(f"memory: {warmup} warm-up requests, then {total} more with 4 clients ...", flush=True)
            memory = memory_soak(running, photo_payloads(), total, warmup)

    print()
    print(table([load.row(f"{args.clients} clients"), memory.load.row(f"{total} requests")], LOAD_HEADER))
    print()
    print(table(memory.rows(), MEMORY_HEADER))
    problems = []
    if load.run.failures() or memory.load.run.failures():
        problems.append("some requests failed (no answer, or a status other than 200)")
    if load.workers_lost or memory.load.workers_lost:
        problems.append("a worker was lost")
    if memory.worst_growth >= 0.05:
        problems.append(f"a worker's RSS grew {memory.worst_growth:.1%} after the warm-up")
    print()
    print("OK: every guarantee held" if not problems else "BROKEN: " + "; ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
