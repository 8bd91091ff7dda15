"""Short versions of `make chaos`: signals under load against a real gunicorn of its own.

The tests share one server and run in file order: SIGKILL and SIGHUP leave it serving, SIGTERM
ends it. Each still holds on its own: the fixture starts the server for whichever runs first.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from scripts.fault_scenarios import sighup_under_load, sigkill_under_load, sigterm_with_requests_in_flight
from scripts.harness import photo_payloads, seeded_weights
from scripts.procs import children, wait_for_workers
from tests import service


@pytest.fixture(scope="module")
def served_weights(tmp_path_factory: pytest.TempPathFactory, seeded_weights: Path) -> Path:
    path = tmp_path_factory.mktemp("chaos") / "served.pth"
    shutil.copy(seeded_weights, path)
    return path


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory, served_weights: Path) -> Iterator[service.Service]:
    running = service.start(tmp_path_factory.mktemp("chaos-log") / "gunicorn.log", {"MODEL_WEIGHTS": str(served_weights)}, workers=2)
    yield running
    running.stop()


def test_sigkill_of_a_worker_under_load_fails_at_most_its_one_request_and_the_master_replaces_it(chaos: service.Service) -> None:
    result = sigkill_under_load(chaos, photo_payloads(20), clients=8, seconds=3, kill_after=1)
    failed = result.run.failures()
    assert len(failed) <= 1  # a sync worker has exactly one request in flight
    assert all(o.status is None and o.started < result.signalled_at for o in failed)  # no answer, never a 5xx; sent before the kill
    assert result.notes["replacement"] and result.notes["victim"] not in result.workers_after
    assert sum(o.status == 200 and o.started > result.signalled_at for o in result.run.outcomes) > 0  # kept answering
    assert requests.get(f"{chaos.url}/health", timeout=30).status_code == 200


def test_sighup_replaces_every_worker_with_new_weights_and_no_failed_request(
    chaos: service.Service, served_weights: Path, tmp_path: Path
) -> None:
    new = seeded_weights(tmp_path / "new.pth", seed=1)
    result = sighup_under_load(chaos, photo_payloads(20), clients=8, seconds=4, hup_after=1, weights=served_weights, new_weights=new)
    assert result.run.failures() == []
    assert len(result.run.outcomes) > 8
    assert not set(result.workers_before) & set(result.workers_after)
    assert result.notes["sha_after"] == result.notes["sha_file"] != result.notes["sha_before"]


def test_a_broken_weights_file_stops_neither_a_replacement_worker_nor_a_sighup(
    chaos: service.Service, served_weights: Path, jpeg: bytes
) -> None:
    # Workers are built from what the master read, not from the file as it is now.
    def served() -> tuple[str, str]:
        sha = requests.get(f"{chaos.url}/model", timeout=30).json()["weights"]["sha256"]
        answer = requests.post(f"{chaos.url}/classify", data=jpeg, headers={"Content-Type": "image/jpeg"}, timeout=30).json()
        return sha, answer["predictions"][0]["label"]

    before = served()
    master = chaos.master_pid()
    good = served_weights.read_bytes()
    broken = served_weights.with_name("broken.pth")
    broken.write_bytes(good[:1000])
    broken.replace(served_weights)
    try:
        victims = children(master)  # both, so that replacements answer what follows
        for victim in victims:
            os.kill(victim, signal.SIGKILL)
        workers = wait_for_workers(master, 2, exclude=set(victims))
        assert served() == before
        os.kill(master, signal.SIGHUP)
        wait_for_workers(master, 2, exclude=set(workers))
        assert served() == before
        assert "classify: SIGHUP: " in chaos.log() and "The new workers serve the model read before." in chaos.log()
    finally:
        served_weights.write_bytes(good)  # for the tests after this one


def test_sigterm_lets_in_flight_requests_finish_then_exits_0(chaos: service.Service) -> None:
    result = sigterm_with_requests_in_flight(chaos, photo_payloads(1)[0], in_flight=2, pause=1.0)
    assert result.in_flight_statuses == [200, 200]
    assert result.exit_code == 0
    # A newcomer after the signal is not served (documented: take the instance out of rotation
    # first), but it is never left hanging: answered, or its connection closed.
    assert result.late_request.failure != "timeout"
    assert "Shutting down: Master" in chaos.log()
