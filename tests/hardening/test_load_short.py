"""Short versions of `make load`, a few seconds each: every request answered, memory flat.

The figures (p99, throughput) are printed, not asserted: speed is for the scripts to measure.
"""

from __future__ import annotations

import pytest

from scripts.harness import photo_payloads
from scripts.load_scenarios import LOAD_HEADER, MEMORY_HEADER, memory_soak, sustained_load
from scripts.traffic import table
from tests import service
from tests.hardening.conftest import API_KEY

pytestmark = pytest.mark.usefixtures("watch_workers")
KEY = {"X-API-Key": API_KEY}


def test_64_concurrent_clients_against_two_workers_all_get_an_answer(live: service.Service) -> None:
    result = sustained_load(live, photo_payloads(20), clients=64, seconds=2, headers=KEY)
    print("\n" + table([result.row("64 clients, 2 s")], LOAD_HEADER))
    assert len(result.run.outcomes) >= 64
    assert result.run.failures() == []  # no timeout, no reset, no status but 200
    assert result.workers_before == result.workers_after


def test_worker_memory_stays_flat_after_the_warm_up(live: service.Service) -> None:
    result = memory_soak(live, photo_payloads(50), requests=100, warmup=40, headers=KEY)
    print("\n" + table([result.load.row("100 requests")], LOAD_HEADER) + "\n" + table(result.rows(), MEMORY_HEADER))
    assert result.load.run.failures() == []
    assert result.load.workers_lost == 0
    assert result.worst_growth < 0.05
