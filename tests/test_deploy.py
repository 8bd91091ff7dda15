"""Deployment files: Kubernetes manifests valid offline in strict mode and consistent with the app; the Dockerfile;
the README's configuration table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask

import settings
from tests.conftest import GUNICORN_VARIABLES
from tests.service import REPO

MANIFESTS = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


def manifests() -> dict[str, dict[str, Any]]:
    documents = [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]
    return {doc["kind"]: doc for doc in documents}


def container() -> dict[str, Any]:
    return manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("version", ["1.28.0", "1.37.0"])
def test_manifests_pass_kubernetes_validate_strict(version: str) -> None:
    result = subprocess.run([str(VALIDATE), "--strict", "-k", version, *map(str, MANIFESTS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(MANIFESTS)


def test_strict_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    # Strict mode is what catches a typo that Kubernetes would silently drop.
    broken = tmp_path / "deployment.yaml"
    broken.write_text((REPO / "deploy" / "k8s" / "deployment.yaml").read_text().replace("readinessProbe:", "readynessProbe:"))
    result = subprocess.run([str(VALIDATE), "--strict", str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "readynessProbe" in result.stdout + result.stderr


def test_deployment_service_autoscaler_and_budget_fit_together() -> None:
    found = manifests()
    assert set(found) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    deployment = found["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert found["Service"]["spec"]["selector"].items() <= labels.items()
    assert found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {port["name"] for port in container()["ports"]}
    assert {port["targetPort"] for port in found["Service"]["spec"]["ports"]} <= port_names
    hpa = found["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    assert hpa["spec"]["minReplicas"] > found["PodDisruptionBudget"]["spec"]["minAvailable"]


def test_probes_ask_routes_the_app_really_has(app: Flask) -> None:
    routes = {rule.rule for rule in app.url_map.iter_rules() if "GET" in (rule.methods or ())}
    probes = {name: container()[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    env = {item["name"]: item.get("value") for item in container()["env"]}
    for name, probe in probes.items():
        if "httpGet" in probe:  # /health on the health port (health_port.py), the same route as the app's
            assert ports[probe["httpGet"]["port"]] == int(env["HEALTH_PORT"]), name
            assert probe["httpGet"]["path"] == "/health" and "/health" in routes, name
        else:
            assert ports[probe["tcpSocket"]["port"]] == int(env["PORT"]), name


def test_a_busy_pod_is_neither_restarted_nor_dropped_for_a_probe_queued_behind_requests() -> None:
    # On the main port a sync worker answers /health only after the request it is on (2-4 s at 64
    # clients per pod); the health port answers from a thread of every worker at once.
    assert "tcpSocket" in container()["livenessProbe"]  # the listening socket completing a handshake is enough to be alive
    for name in ("startupProbe", "readinessProbe"):
        assert container()[name]["httpGet"]["port"] == "health", name
    service_ports = {port["targetPort"] for port in manifests()["Service"]["spec"]["ports"]}
    assert service_ports == {"http"}  # the health port, which needs no key, is not exposed


def test_workers_follow_the_cpu_limit_and_torch_threads_adapt_within_it() -> None:
    spec = container()
    env = {item["name"]: item for item in spec["env"]}
    source = env["WEB_CONCURRENCY"]["valueFrom"]["resourceFieldRef"]
    assert (source["resource"], source["containerName"], source["divisor"]) == ("limits.cpu", spec["name"], "1")
    # Unpinned, torch threads per request range from the whole CPU limit (a lone request) down to
    # limit / workers (all busy), read from the cgroup quota (cpus.py, cpu_budget.py).
    assert "TORCH_THREADS" not in env
    assert spec["resources"]["requests"]["cpu"] == spec["resources"]["limits"]["cpu"]


def test_termination_grace_outlasts_the_graceful_timeout() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    env = {item["name"]: item.get("value") for item in container()["env"]}
    pre_stop = int(container()["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + int(env["GRACEFUL_TIMEOUT"])


def test_dockerfile_installs_the_pinned_cpu_torch_and_runs_gunicorn_unprivileged() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    pins = dict(re.findall(r"^(torch|torchvision)==(\S+)$", (REPO / "requirements.txt").read_text(), re.M))
    install = next(line for line in dockerfile.splitlines() if "download.pytorch.org/whl/cpu" in line)
    assert f"torch=={pins['torch']}" in install and f"torchvision=={pins['torchvision']}" in install
    assert re.search(r"^FROM python:3\.\d+-slim$", dockerfile, re.M)
    assert re.search(r"^USER (?!root|0\b)\S+$", dockerfile, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*/health' % \(os.environ.get\('HEALTH_PORT'\) or os.environ\['PORT'\]\)", dockerfile, re.M)
    assert re.search(r"^\s+HEALTH_PORT=\d+$", dockerfile, re.M)
    assert dockerfile.rstrip().splitlines()[-1] == 'CMD ["gunicorn", "-c", "gunicorn.conf.py"]'  # exec form: gunicorn is PID 1
    user = re.search(r"--uid (\d+)", dockerfile).group(1)  # type: ignore[union-attr]
    assert manifests()["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user)


def test_the_dockerfile_step_that_bakes_in_the_weights_runs(seeded_weights: Path) -> None:
    # No Docker engine here: run the step's Python as the build would (with a local weights file).
    step = re.search(r'^RUN python -c "(.+)"$', (REPO / "Dockerfile").read_text(), re.M)
    assert step, "the Dockerfile no longer bakes in the weights with python -c"
    environment = {**os.environ, "MODEL_WEIGHTS": str(seeded_weights)}
    result = subprocess.run([sys.executable, "-c", step.group(1)], cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def test_dockerignore_keeps_environments_and_tests_out_of_the_image() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "node_modules", "tests"} <= ignored


def test_every_setting_the_service_reads_is_in_the_readmes_configuration_table() -> None:
    table = {line.split("|")[1].strip().strip("`") for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `")}
    # CLASSIFY_WORKERS is set by gunicorn.conf.py, not by the operator.
    read = {name for name in settings.ENVIRONMENT if name != "CLASSIFY_WORKERS"} | set(GUNICORN_VARIABLES)
    assert read <= table, sorted(read - table)
