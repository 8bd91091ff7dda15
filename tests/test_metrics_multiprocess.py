"""The gunicorn master's side of multiprocess metrics: a clean folder before workers start, removed after."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import metrics_multiprocess
from tests.service import REPO


@pytest.fixture(autouse=True)
def each_test_leaves_the_environment_as_it_found_it() -> Iterator[None]:
    """prepare() sets PROMETHEUS_MULTIPROC_DIR in this process; a leak would send every later server's
    metrics (tests/service.py passes the environment on) to a stale or removed folder.

    Checked after each test here, once its monkeypatch is undone (autouse fixtures are set up first,
    so torn down last), whichever order the tests run in and whichever leaks.
    """
    before = os.environ.get(metrics_multiprocess.ENV)
    yield
    after = os.environ.get(metrics_multiprocess.ENV)  # a local: a failure shows the value, not all of os.environ
    assert after == before, f"{metrics_multiprocess.ENV} leaked out of the test"


def stale_counter(folder: Path) -> None:
    """A previous run's real metric file: left there, its 1000 requests would add to this run's."""
    code = "from prometheus_client import Counter; Counter('classify_http_requests', '', ['route']).labels('/classify').inc(1000)"
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}, check=True)


def test_a_configured_folder_is_created_or_emptied_of_metric_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    stale_counter(folder)
    (folder / "README").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    assert list(folder.glob("*.db"))
    assert metrics_multiprocess.prepare() == folder
    assert sorted(path.name for path in folder.iterdir()) == ["README"]
    metrics_multiprocess.cleanup()
    assert folder.exists()  # the operator's folder stays


def test_a_missing_configured_folder_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "new" / "metrics"))
    assert metrics_multiprocess.prepare().is_dir()


def test_without_configuration_a_private_folder_is_made_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Empty counts as unset; setenv (unlike delenv of an absent variable) also undoes what prepare() sets.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    folder = metrics_multiprocess.prepare()
    try:
        assert folder.is_dir() and not list(folder.iterdir())
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder)  # what the workers will inherit
    finally:
        metrics_multiprocess.cleanup()
    assert not folder.exists()


def test_a_private_folder_goes_when_the_master_halts_and_stays_while_workers_exit() -> None:
    # A master that halts (a worker cannot boot, a failed SIGHUP) skips gunicorn's on_exit hook;
    # its workers, forked from it, inherit its exit hooks and must not remove the shared folder.
    script = (
        "import os, sys, metrics_multiprocess\n"
        "folder = metrics_multiprocess.prepare()\n"
        "print(folder, flush=True)\n"
        "if (pid := os.fork()) == 0:\n    sys.exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(folder.is_dir(), flush=True)\n"
        "sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    folder, kept_after_worker_exit = result.stdout.split()
    assert result.returncode == 3
    assert kept_after_worker_exit == "True"
    assert not Path(folder).exists()
