"""`make chaos`: signals and slow clients against fresh services, under load.

    python -m scripts.chaos            # each scenario at full length (about 2 min)
    python -m scripts.chaos --short    # shorter loads

Every scenario starts its own `make run` on a free loopback port with two workers and stops it.
Prints a table of what was tried and what happened; exits non-zero if a guarantee is broken.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from scripts.fault_scenarios import sighup_under_load, sigkill_under_load, sigterm_with_requests_in_flight, slow_client
from scripts.harness import photo_payloads, seeded_weights, weights_for_run
from scripts.traffic import table
from tests import service

Row = tuple[str, str, str, bool]  # scenario, what was tried, what happened, held?


def sigkill(folder: Path, env: dict[str, str], seconds: float) -> Row:
    with service.running(folder / "sigkill.log", env) as running:
        result = sigkill_under_load(running, photo_payloads(), clients=16, seconds=seconds, kill_after=seconds / 3)
        recovered = result.failed_after(1.0) == []
    failed = result.run.failures()
    kinds = sorted({o.failure or str(o.status) for o in failed})
    happened = (
        f"{len(result.run.outcomes)} requests, {len(failed)} failed ({', '.join(kinds) or 'none'}); "
        f"worker {result.notes['victim']} replaced by {result.notes['replacement']}; none failed after the kill"
    )
    held = len(failed) <= 1 and all(o.status is None for o in failed) and recovered and bool(result.notes["replacement"])
    return ("SIGKILL a worker", f"16 clients for {seconds:g}s, kill -9 one worker at {seconds / 3:.0f}s", happened, held)


def sighup(folder: Path, env: dict[str, str], seconds: float) -> Row:
    weights = folder / "served.pth"
    shutil.copy(env["MODEL_WEIGHTS"], weights)
    new = seeded_weights(folder / "new.pth", seed=1)
    with service.running(folder / "sighup.log", {**env, "MODEL_WEIGHTS": str(weights)}) as running:
        result = sighup_under_load(running, photo_payloads(), 16, seconds, seconds / 3, weights, new)
    failed = result.run.failures()
    new_weights = result.notes["sha_after"] == result.notes["sha_file"] != result.notes["sha_before"]
    happened = (
        f"{len(result.run.outcomes)} requests, {len(failed)} failed; workers {result.workers_before} -> "
        f"{result.workers_after}; new weights served: {new_weights}; p99 {result.run.percentile(0.99) * 1000:.0f} ms"
    )
    held = not failed and not set(result.workers_before) & set(result.workers_after) and new_weights
    return ("SIGHUP the master", f"16 clients for {seconds:g}s, new weights file + HUP at {seconds / 3:.0f}s", happened, held)


def sigterm(folder: Path, env: dict[str, str], seconds: float) -> Row:
    running = service.start(folder / "sigterm.log", env)
    try:
        result = sigterm_with_requests_in_flight(running, photo_payloads(1)[0], in_flight=2, pause=1.0)
    finally:
        running.stop()
    late = result.late_request.status or result.late_request.failure
    happened = (
        f"in-flight answers {result.in_flight_statuses}; a request sent after the signal: {late}; "
        f"exit code {result.exit_code} after {result.seconds_to_exit:.1f}s"
    )
    held = result.in_flight_statuses == [200, 200] and result.exit_code == 0
    return ("SIGTERM the master", "2 uploads half-sent (both workers busy), TERM, then the rest", happened, held)


def slow(mode: str) -> Callable[[Path, dict[str, str], float], Row]:
    def scenario(folder: Path, env: dict[str, str], seconds: float) -> Row:
        timeouts = {"UPLOAD_TIMEOUT": "5", "HEADER_TIMEOUT": "5"}
        with service.running(folder / f"slow-{mode}.log", {**env, **timeouts}) as running:
            result = slow_client(running, photo_payloads(1)[0], mode, interval=0.5, limit=20)
        happened = (
            f"answered {result.status} {result.code} after {result.seconds:.1f}s; a normal request meanwhile: "
            f"{result.other_request_status} in {result.other_request_seconds:.2f}s; "
            f"workers lost: {len(set(result.workers_before) - set(result.workers_after))}"
        )
        held = (
            result.status == 408
            and result.other_request_status == 200
            and result.other_request_seconds < result.seconds
            and result.workers_before == result.workers_after
            # A silent client waits in the kernel instead (TCP_DEFER_ACCEPT, gunicorn.conf.py): 7 s for a 5 s deadline.
            and result.seconds < 10
        )
        tried = {
            "body": "headers, then 1 body byte every 0.5s",
            "headers": "1 header byte every 0.5s",
            "silent": "connects, sends nothing",
        }[mode]
        return (f"slow client ({mode})", f"{tried}; timeouts 5s", happened, held)

    scenario.__name__ = f"slow client ({mode})"
    return scenario


SCENARIOS = [sigkill, sighup, sigterm, slow("headers"), slow("body"), slow("silent")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="shorter loads")
    args = parser.parse_args()
    seconds = 6.0 if args.short else 30.0
    rows = []
    with tempfile.TemporaryDirectory(prefix="classify-chaos-") as name:
        folder = Path(name)
        env = {"MODEL_WEIGHTS": str(weights_for_run(folder))}
        for scenario in SCENARIOS:
            print(f"{scenario.__name__} ...", flush=True)
            rows.append(scenario(folder, env, seconds))
    print()
    print(table([[s, t, h, "yes" if ok else "NO"] for s, t, h, ok in rows], ["scenario", "tried", "happened", "held"]))
    return 0 if all(row[3] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
