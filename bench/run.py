"""Benchmark the service the way it is run (`make bench`): one table, in under ~10 minutes.

1. The raw limit: the model alone (bench/raw.py), best arrangement of processes x threads.
2. The real service, started with `make run` (gunicorn, WEB_CONCURRENCY workers), cold start
   timed to the first successful classification.
3. Real multipart uploads of the shared photos from a separate client process (bench/load.py)
   at each concurrency level: img/s, latency percentiles, errors, server CPU, RSS and PSS. The
   raw limit is measured again right before each level (this machine's speed drifts), and the
   tutorial-style app (bench/tutorial_app.py) is driven right after it at 1, 4 and 16 clients.
4. Phone-size photos (4000x3000 JPEGs made from the shared photos), batches of 8, memory per
   worker, reduced-decode agreement, and bf16.

Nothing here asserts: it prints figures. BENCHMARKS.md explains them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from raw import phone_size, photos_dir  # noqa: E402

from cpus import available_cpus  # noqa: E402
from scripts import procs  # noqa: E402
from tests import service  # noqa: E402

RESULTS = REPO / "bench" / "results"
PHOTOS = photos_dir()
PEERS_FP32 = {1: 28.9, 4: 34.0, 16: 37.7}  # best peer img/s per concurrency, from the project's reference run


def python() -> str:
    return str(REPO / ".venv" / "bin" / "python")


def weights_env() -> dict[str, str]:
    """Real weights if the torchvision cache or MODEL_WEIGHTS has them, else seeded ones (same speed)."""
    if os.environ.get("MODEL_WEIGHTS") or os.environ.get("MODEL_FACTORY"):
        return {}
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    if (torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth").is_file():
        return {}
    seeded = RESULTS / "resnet18-seeded.pth"
    if not seeded.is_file():  # made by a child (not scripts.harness.seeded_weights): torch imported here
        # would map the same library pages as the service and so lower the PSS measured for it
        script = "import torch, torchvision, sys; torch.manual_seed(0); torch.save(torchvision.models.resnet18().state_dict(), sys.argv[1])"
        subprocess.run([python(), "-c", script, str(seeded)], check=True)
    return {"MODEL_WEIGHTS": str(seeded)}


def large_photos(count: int = 8) -> list[Path]:
    """4000x3000 JPEGs (phone size) made by upscaling shared photos, cached in bench/results."""
    folder = RESULTS / "large"
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for source in sorted(PHOTOS.glob("*.JPEG"))[:count]:
        target = folder / source.name
        if not target.is_file():
            phone_size(source).save(target, quality=95)
        made.append(target)
    return made


def first_photo() -> bytes:
    return sorted(PHOTOS.glob("*.JPEG"))[0].read_bytes()


def run_json(command: list[str], env: dict[str, str] | None = None) -> dict:
    output = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


class Stopped:
    """A server stopped when its `with` block ends, also when a section of the run fails."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Server(Stopped):
    """The service started as the README starts it (tests/service.py: `make run`), timed from launch
    to its first classification; its processes' CPU time and memory."""

    def __init__(self, env: dict[str, str], workers: int) -> None:
        started = time.monotonic()
        self.service = service.start(RESULTS / f"server-{workers}-workers.log", env, workers=workers, ready_timeout=120)
        self.url = self.service.url
        try:
            requests.post(f"{self.url}/classify", data=first_photo(), headers={"Content-Type": "image/jpeg"}, timeout=30).raise_for_status()
        except BaseException:
            self.stop()  # started, but its `with` block never begins
            raise
        self.cold_start_s = time.monotonic() - started

    def pids(self) -> list[int]:
        master = self.service.master_pid()
        return [master, *procs.children(master)]

    def cpu_ticks(self) -> int:
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total

    def memory_mb(self) -> dict[str, float]:
        rss = pss = 0
        pids = self.pids()
        for pid in pids:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        return {"rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1), "processes": len(pids)}

    def stop(self) -> None:
        self.service.stop()


class TutorialApp(Stopped):
    """bench/tutorial_app.py under gunicorn, the way a tutorial runs it: the same-run baseline."""

    def __init__(self, env: dict[str, str], workers: int) -> None:
        self.url = f"http://127.0.0.1:{service.free_port()}"
        self.log = open(RESULTS / "tutorial-app.log", "wb")  # noqa: SIM115 - the child writes to it for its whole life
        bind = self.url.removeprefix("http://")
        self.process = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "gunicorn"), "-w", str(workers), "-b", bind, "tutorial_app:app"],
            # Started in bench/: from the checkout, gunicorn would read the service's own
            # gunicorn.conf.py (its worker class, preload and hooks) and this would be no tutorial app.
            cwd=REPO / "bench",
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.post(f"{self.url}/classify", files={"image": ("a.jpg", first_photo())}, timeout=30).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
            except BaseException:
                self.stop()  # started, but its `with` block never begins
                raise
        self.stop()
        raise SystemExit(f"the tutorial app did not start; see {RESULTS / 'tutorial-app.log'}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # it may have failed to start
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


def raw_model(processes: int, threads: int, seconds: float, env: dict[str, str] | None = None) -> dict:
    """bench/raw.py: the model alone, in `processes` x `threads`: img/s and median ms."""
    command = [python(), str(REPO / "bench" / "raw.py"), "--processes", str(processes), "--threads", str(threads)]
    return run_json([*command, "--seconds", str(seconds)], env)


def raw_decode() -> dict:
    """bench/raw.py --decode: decoding plus preprocessing one shared photo (ms)."""
    return run_json([python(), str(REPO / "bench" / "raw.py"), "--decode"])


def raw_limit(arrangement: tuple[int, int], seconds: float = 4) -> float:
    """The model alone, in the best (processes, threads) arrangement: img/s."""
    return float(raw_model(*arrangement, seconds)["img_per_s"])


def raw_alone(cpus: int, seconds: float = 4) -> dict[str, float]:
    """One image on all CPUs (ms), and decoding plus preprocessing one shared photo (ms)."""
    return {"median_ms": raw_model(1, cpus, seconds)["median_ms"], **raw_decode()}


def load_url(url: str, files: list[Path], concurrency: int, seconds: float, per_request: int = 1) -> dict:
    command = [python(), str(REPO / "bench" / "load.py"), url, *map(str, files)]
    return run_json([*command, "--concurrency", str(concurrency), "--seconds", str(seconds), "--per-request", str(per_request)])


def load(server: Server, files: list[Path], concurrency: int, seconds: float, per_request: int = 1) -> dict:
    hz = os.sysconf("SC_CLK_TCK")
    ticks, began = server.cpu_ticks(), time.monotonic()
    result = load_url(server.url, files, concurrency, seconds, per_request)
    result["server_cpu_pct"] = round(100 * (server.cpu_ticks() - ticks) / hz / (time.monotonic() - began))
    return result


def exercise(server: Server, photos: list[Path], seconds: float = 4) -> dict[str, float]:
    """Every kind of request the benchmark sends (small photos under load, phone photos, batches of
    8), then the memory: so that servers with different worker counts are compared like for like."""
    load(server, photos, 4, seconds)
    load(server, large_photos(), 2, seconds)
    load(server, photos, 1, seconds, per_request=8)
    load(server, photos, 4, seconds)
    return server.memory_mb()


def per_extra_worker(one: dict[str, float], many: dict[str, float]) -> float:
    return (many["pss_mb"] - one["pss_mb"]) / max(1, many["processes"] - one["processes"])


def table(rows: list[list[object]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """What the run prints, kept to be saved to bench/results/latest.md at the end."""

    def __init__(self) -> None:
        self.out = io.StringIO()

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.out.write(text + "\n")

    def table(self, rows: list[list[object]], header: list[str]) -> None:
        self.say(table(rows, header))


@dataclass
class Raw:
    """The model alone at the start of the run."""

    cpus: int
    by_arrangement: dict[tuple[int, int], dict]
    best: tuple[int, int]  # (processes, threads) with the most img/s: the raw limit's arrangement
    decode_ms: float  # decoding and preprocessing one shared photo, on one CPU


def batch1_ceiling(limit: float, decode_ms: float, client_cpu_pct: float, cpus: int) -> float:
    """The most a server doing one image per forward pass can reach, as a share of the raw limit
    measured next to it: each image costs its forward pass's CPU plus its decoding's, and the load
    generator's CPU is taken from the same CPUs. HTTP, parsing and answering would lower it more."""
    forward_cpu_ms = 1000 * cpus / limit
    return (1 - client_cpu_pct / (100 * cpus)) * forward_cpu_ms / (forward_cpu_ms + decode_ms)


def machine_section(report: Report, env: dict[str, str], cpus: int) -> None:
    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line), "?"
    )
    report.say(f"# classify benchmark, {time.strftime('%Y-%m-%d %H:%M')}\n")
    report.say(
        f"Machine: {cpus} CPUs usable ({cpu_model}), {platform.python_version()}, "
        f"weights: {env.get('MODEL_WEIGHTS', 'torchvision cache')}\n"
    )


def raw_section(report: Report, cpus: int) -> Raw:
    by_arrangement = {(p, t): raw_model(p, t, 8) for p, t in ((1, cpus), (cpus, 1))}
    raw = Raw(cpus, by_arrangement, max(by_arrangement, key=lambda a: by_arrangement[a]["img_per_s"]), raw_decode()["decode_preprocess_ms"])
    report.say("## The model alone (fp32)\n")
    report.table(
        [[f"{p} x {t}", r["img_per_s"], r["median_ms"]] for (p, t), r in by_arrangement.items()],
        ["processes x threads", "img/s", "ms per forward"],
    )
    report.say(
        f"\nRaw limit at the start: **{by_arrangement[raw.best]['img_per_s']} img/s** ({raw.best[0]} x {raw.best[1]}). "
        f"One image on all {cpus} CPUs: {by_arrangement[(1, cpus)]['median_ms']} ms; "
        f"decode + preprocess of a shared photo: {raw.decode_ms} ms.\n"
    )
    return raw


def levels_section(report: Report, server: Server, photos: list[Path], raw: Raw, levels: list[int], seconds: float) -> dict:
    """The service at each concurrency level; returns {level: (result, raw limit next to it)}."""
    cpus = raw.cpus
    rows, ours, lone = [], {}, None
    for level in levels:
        # This machine's speed drifts by tens of percent within minutes: the raw limit each level is
        # compared with is measured right before it.
        limit_now = raw_limit(raw.best)
        result = load(server, photos, level, seconds)
        memory = server.memory_mb()
        if level == 1:
            lone = {"p50_ms": result["p50_ms"], **raw_alone(cpus)}
        ours[level] = (result, limit_now)
        ceiling = batch1_ceiling(limit_now, raw.decode_ms, result["client_cpu_pct"], cpus)
        rows.append(
            [
                level,
                result["img_per_s"],
                limit_now,
                f"{result['img_per_s'] / limit_now:.2f}",
                f"{ceiling:.2f}",
                result["p50_ms"],
                result["p95_ms"],
                result["p99_ms"],
                result["errors"],
                result["server_cpu_pct"],
                result["client_cpu_pct"],
                memory["rss_mb"],
                memory["pss_mb"],
            ]
        )
    report.say("## The service, fp32, 500x375-ish shared photos, multipart uploads\n")
    header = ["clients", "img/s", "raw limit just before", "÷ raw limit", "batch-1 ceiling", "p50 ms", "p95 ms", "p99 ms"]
    report.table(rows, [*header, "errors", "server CPU %", "client CPU %", "RSS MB", "PSS MB"])
    report.say(
        "\nBatch-1 ceiling: the most any server that runs one image per forward pass could reach, as a share of "
        "the raw limit: the forward pass's CPU over that plus decoding's, less the client's share of the CPUs."
    )
    if lone:
        model_and_decode = lone["median_ms"] + lone["decode_preprocess_ms"]
        report.say(
            f"\nLone request p50 {lone['p50_ms']} ms; measured next to it, one image on all CPUs {lone['median_ms']} ms "
            f"+ decode {lone['decode_preprocess_ms']} ms = {model_and_decode:.1f} ms: "
            f"**{lone['p50_ms'] / model_and_decode:.2f}x** (target <= 1.15)."
        )
    return ours


def tutorial_section(report: Report, env: dict[str, str], photos: list[Path], raw: Raw, ours: dict, seconds: float) -> None:
    # After the service's levels, not during them: its processes would share library pages with
    # the service's and so lower the service's PSS.
    rows = []
    with TutorialApp(env, workers=raw.cpus) as tutorial:
        load_url(tutorial.url, photos, raw.cpus, 3)  # warm-up
        for level in [level for level in PEERS_FP32 if level in ours]:
            limit_now = raw_limit(raw.best)
            baseline = load_url(tutorial.url, photos, level, seconds)
            result, our_limit = ours[level]
            rows.append(
                [
                    level,
                    f"{result['img_per_s']} ({result['img_per_s'] / our_limit:.2f})",
                    f"{baseline['img_per_s']} ({baseline['img_per_s'] / limit_now:.2f})",
                    result["p50_ms"],
                    baseline["p50_ms"],
                    PEERS_FP32[level],
                ]
            )
    report.say("## The tutorial-style app, same client, same run (bench/tutorial_app.py: gunicorn, 1 torch thread per worker)\n")
    header = ["clients", "classify img/s (÷ raw)", "tutorial app img/s (÷ raw)", "classify p50 ms", "tutorial app p50 ms"]
    report.table(rows, [*header, "best peer, reference run"])
    report.say("")


def phone_section(report: Report, server: Server, photos: list[Path], seconds: float) -> None:
    large = large_photos()
    small_before = load(server, photos, 1, seconds / 2)
    big_lone = load(server, large, 1, seconds)
    small_after = load(server, photos, 1, seconds / 2)
    small_lone_p50 = (small_before["p50_ms"] + small_after["p50_ms"]) / 2
    big_four = load(server, large, 4, seconds)
    report.say("## Phone photos (4000x3000 JPEG, ~1-2 MB)\n")
    report.table(
        [[level, r["img_per_s"], r["p50_ms"], r["errors"]] for level, r in ((1, big_lone), (4, big_four))],
        ["clients", "img/s", "p50 ms", "errors"],
    )
    report.say(
        f"\nLone phone photo p50 / lone shared photo p50 (measured just before and after it: {small_before['p50_ms']}, "
        f"{small_after['p50_ms']} ms): **{big_lone['p50_ms'] / small_lone_p50:.2f}x** (target <= 1.5).\n"
    )


def batch_section(report: Report, server: Server, photos: list[Path], seconds: float) -> None:
    batched = load(server, photos, 1, seconds, per_request=8)
    singles = load(server, photos, 1, seconds, per_request=1)
    report.say("## Batches: one request of 8 images vs 8 requests of one (one client)\n")
    report.table(
        [["8 per request", batched["img_per_s"], batched["p50_ms"]], ["1 per request", singles["img_per_s"], singles["p50_ms"]]],
        ["", "img/s", "p50 ms per request"],
    )
    report.say(f"\nBatch speed-up: **{batched['img_per_s'] / singles['img_per_s']:.2f}x** (target >= 1.1).\n")


def memory_section(report: Report, env: dict[str, str], photos: list[Path], many_warm: dict, many_exercised: dict) -> None:
    """The same warm-up and mix on one worker, against what the many-worker server showed."""
    with Server(env, workers=1) as one:
        load(one, photos, 1, 3)
        one_warm = one.memory_mb()
        one_exercised = exercise(one, photos)
    report.say("## Memory per worker\n")
    report.table(
        [
            [when, one_pss["pss_mb"], many_pss["pss_mb"], f"{per_extra_worker(one_pss, many_pss):.0f}"]
            for when, one_pss, many_pss in (
                ("after a 3 s warm-up", one_warm, many_warm),
                ("after the same mix of small photos, phone photos and batches", one_exercised, many_exercised),
            )
        ],
        ["", "PSS MB, 1 worker", f"PSS MB, {many_exercised['processes'] - 1} workers", "MB per extra worker"],
    )
    report.say(
        f"\nEach extra worker adds **{per_extra_worker(one_exercised, many_exercised):.0f} MB PSS** after the mix (target <= 150).\n"
    )


def accuracy_section(report: Report) -> None:
    agreement = run_json([python(), str(REPO / "bench" / "agreement.py")])
    report.say("## Accuracy of the speed options (EfficientNet-Lite0, real ImageNet weights)\n")
    report.say(
        f"Reduced-scale JPEG decoding vs full-size decoding, {agreement['photos']} shared photos upscaled to 4000x3000: "
        f"top-1 agreement **{agreement['reduced_decode_agreement']:.3f}** (target >= 0.99)."
    )
    if agreement["bf16_agreement"] is not None:
        report.say(f"bf16 vs fp32 top-1 agreement: **{agreement['bf16_agreement']:.3f}** (target >= 0.99).")
    report.say("")


def bf16_section(report: Report, raw: Raw) -> None:
    cpus = raw.cpus
    report.say("## bf16\n")
    bf16_raw = raw_model(1, cpus, 5, env={"PRECISION": "bf16"})
    fp32 = raw.by_arrangement[(1, cpus)]["img_per_s"]
    supported = run_json([python(), "-c", "import json, model; print(json.dumps({'ok': model.bf16_supported()}))"])["ok"]
    if supported:
        report.say(f"PRECISION=bf16, model alone: {bf16_raw['img_per_s']} img/s vs fp32 {fp32} (**{bf16_raw['img_per_s'] / fp32:.2f}x**).")
    else:
        report.say(
            "This CPU has no native bf16 (AVX512-BF16 / AMX): the service serves fp32 when PRECISION=bf16 is asked for "
            f"(measured above as {bf16_raw['img_per_s']} img/s, i.e. fp32), and says so in its log and in GET /model."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark classify on this machine.")
    parser.add_argument("--seconds", type=float, default=12, help="seconds per concurrency level")
    parser.add_argument("--levels", default="1,2,4,8,16")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {**weights_env(), "BENCH_PHOTOS": str(PHOTOS)}
    os.environ.update(env)
    photos = sorted(PHOTOS.glob("*.JPEG"))
    report = Report()

    cpus = available_cpus()
    machine_section(report, env, cpus)
    raw = raw_section(report, cpus)
    with Server(env, workers=int(os.environ.get("WEB_CONCURRENCY") or cpus)) as server:
        report.say(f"Cold start (launch to first classification, {len(server.pids()) - 1} workers): **{server.cold_start_s:.2f} s**\n")
        load(server, photos, cpus, 3)  # warm-up
        warm = server.memory_mb()
        ours = levels_section(report, server, photos, raw, [int(x) for x in args.levels.split(",")], args.seconds)
        end = server.memory_mb()
        report.say(
            f"Memory: {end['processes']} processes, RSS {end['rss_mb']} MB, PSS {end['pss_mb']} MB "
            f"(after warm-up: RSS {warm['rss_mb']} MB).\n"
        )
        tutorial_section(report, env, photos, raw, ours, args.seconds)
        phone_section(report, server, photos, args.seconds)
        batch_section(report, server, photos, args.seconds)
        exercised = exercise(server, photos)
    memory_section(report, env, photos, warm, exercised)
    accuracy_section(report)
    bf16_section(report, raw)
    (RESULTS / "latest.md").write_text(report.out.getvalue())
    print(f"\nSaved to {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    main()
