"""Load scenarios against a running service: sustained concurrency, and memory over many requests.

Each returns a result with the figures RELIABILITY.md reports and that the tests assert on.
"""

from __future__ import annotations

from dataclasses import dataclass

from scripts.procs import children, rss_bytes
from scripts.traffic import Payload, Run, hammer
from tests.service import Service


@dataclass
class LoadResult:
    run: Run
    clients: int
    workers_before: list[int]
    workers_after: list[int]

    @property
    def workers_lost(self) -> int:
        return len(set(self.workers_before) - set(self.workers_after))

    def row(self, name: str) -> list[object]:
        counts = self.run.counts()
        no_answer = sum(n for kind, n in counts.items() if not kind.isdigit())
        return [
            name,
            self.clients,
            f"{self.run.seconds:.0f}s",
            len(self.run.outcomes),
            counts.get("200", 0),
            counts.get("503", 0),
            len(self.run.failures()),
            no_answer,
            f"{self.run.percentile(0.5) * 1000:.0f}",
            f"{self.run.percentile(0.99) * 1000:.0f}",
            f"{max((o.seconds for o in self.run.outcomes), default=0) * 1000:.0f}",
            f"{self.run.throughput:.1f}",
            self.workers_lost,
        ]


LOAD_HEADER = [
    "scenario",
    "clients",
    "time",
    "requests",
    "200",
    "503",
    "failed",
    "no answer",
    "p50 ms",
    "p99 ms",
    "max ms",
    "req/s",
    "workers lost",
]


def sustained_load(
    service: Service, payloads: list[Payload], clients: int, seconds: float, timeout: float = 60, headers: dict[str, str] | None = None
) -> LoadResult:
    """`clients` concurrent clients for `seconds`; every request should be answered."""
    master = service.master_pid()
    before = children(master)
    run = hammer(f"{service.url}/classify", payloads, clients, seconds=seconds, timeout=timeout, headers=headers)
    return LoadResult(run, clients, before, children(master))


@dataclass
class MemoryResult:
    load: LoadResult
    warmup: int
    rss_warm: dict[int, int]  # worker pid -> bytes after the warm-up
    rss_end: dict[int, int]

    def growth(self, pid: int) -> float:
        return (self.rss_end[pid] - self.rss_warm[pid]) / self.rss_warm[pid]

    @property
    def worst_growth(self) -> float:
        return max(self.growth(pid) for pid in self.rss_warm if pid in self.rss_end)

    def rows(self) -> list[list[object]]:
        return [
            [
                pid,
                f"{self.rss_warm[pid] / 2**20:.1f}",
                f"{self.rss_end.get(pid, 0) / 2**20:.1f}",
                f"{self.growth(pid) * 100:+.2f}%" if pid in self.rss_end else "worker gone",
            ]
            for pid in sorted(self.rss_warm)
        ]


MEMORY_HEADER = ["worker pid", "RSS after warm-up MiB", "RSS at end MiB", "growth"]


def memory_soak(
    service: Service, payloads: list[Payload], requests: int, warmup: int, clients: int = 4, headers: dict[str, str] | None = None
) -> MemoryResult:
    """`warmup` requests, RSS of every worker, then `requests` more, RSS again."""
    master = service.master_pid()
    url = f"{service.url}/classify"
    hammer(url, payloads, clients, requests=warmup, timeout=60, headers=headers)
    before = children(master)
    rss_warm = {pid: rss_bytes(pid) for pid in before}
    run = hammer(url, payloads, clients, requests=requests, timeout=60, headers=headers)
    after = children(master)
    rss_end = {pid: rss_bytes(pid) for pid in after}
    return MemoryResult(LoadResult(run, clients, before, after), warmup, rss_warm, rss_end)
