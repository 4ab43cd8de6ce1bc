"""The deploy files work as shipped: compose config passes with .env.example, every service has
a healthcheck, the Kubernetes manifests pass the API schemas and harden every pod."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = shutil.which("docker-compose")


@pytest.fixture(scope="module")
def compose_config(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if COMPOSE is None:
        pytest.skip("docker-compose is not installed (apt package docker-compose; bootstrap)")
    deploy = tmp_path_factory.mktemp("checkout") / "deploy"
    shutil.copytree(DEPLOY, deploy)
    shutil.copy(deploy / ".env.example", deploy / ".env")
    done = subprocess.run(
        [COMPOSE, "-f", str(deploy / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=deploy,
    )
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_compose_runs_with_the_example_env(compose_config: dict):
    services = compose_config["services"]
    assert set(services) == {"redis", "receiver", "intake", "worker"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), name
    assert services["worker"]["stop_grace_period"] == "10m"
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    # docker-compose v1 prints short volume syntax, the compose plugin the long one.
    volumes = [
        v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in redis["volumes"]
    ]
    assert any(v.startswith("redis-data:/data") for v in volumes)
    assert services["receiver"]["environment"]["REDIS_URL"].startswith("redis://:change-me-too@")


def test_dockerfile_is_pinned_non_root_with_a_healthcheck():
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    base = next(line.split()[1] for line in lines if line.startswith("FROM "))
    assert ":" in base and "latest" not in base and base.split(":")[1][0].isdigit()
    assert [line for line in lines if line.startswith("USER ")][-1] not in ("USER root", "USER 0")
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert any("-c constraints.txt" in line for line in lines)


def test_build_context_leaves_out_the_virtualenv_and_tests():
    text = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in text if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # everything out, then the packages back in
    kept = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert {"codexbot", "app", "workers", "sandbox", "pyproject.toml"} <= kept
    assert not kept & {".venv", "tests", "sim", ".git"}


def kubernetes_documents() -> list[tuple[str, dict]]:
    return [
        (path.name, document)
        for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


@pytest.mark.parametrize(("name", "document"), kubernetes_documents())
def test_kubernetes_manifest_matches_the_api_schema(name: str, document: dict):
    kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def pods() -> list[tuple[str, dict]]:
    return [
        (document["metadata"]["name"], document["spec"]["template"]["spec"])
        for _, document in kubernetes_documents()
        if document["kind"] in ("Deployment", "StatefulSet")
    ]


@pytest.mark.parametrize(("name", "pod"), pods())
def test_every_pod_but_the_engine_is_hardened(name: str, pod: dict):
    for container in pod["containers"]:
        assert container.get("resources", {}).get("limits", {}).get("memory"), name
        assert container.get("livenessProbe") or container.get("readinessProbe"), name
        mounts = {volume.get("hostPath", {}).get("path") for volume in pod.get("volumes", [])}
        assert "/var/run/docker.sock" not in mounts, name
        if name == "codexbot-docker":
            continue  # an engine needs privilege to run containers (docker-engine.yaml says why)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"]["drop"] == ["ALL"], name


def test_kubernetes_has_what_operations_need():
    documents = kubernetes_documents()
    kinds = {(document["kind"], document["metadata"]["name"]) for _, document in documents}
    assert ("PodDisruptionBudget", "codexbot-worker") in kinds
    assert {kind for kind, _ in kinds} >= {"NetworkPolicy", "Secret", "StatefulSet"}
    redis = next(d for _, d in documents if d["metadata"]["name"] == "codexbot-redis")
    assert redis["spec"]["volumeClaimTemplates"]
    worker = dict(pods())["codexbot-worker"]
    env = {item["name"]: item.get("value") for item in worker["containers"][0]["env"]}
    assert env["DOCKER_HOST"].startswith("tcp://")
    assert worker["terminationGracePeriodSeconds"] >= 600


def test_task_workers_hand_back_their_task_before_the_platform_kills_them(compose_config: dict):
    """CODEX_SHUTDOWN_GRACE ends a warm shutdown (the task goes back to the queue) before the
    stop grace period's kill, in compose and in Kubernetes."""
    worker = compose_config["services"]["worker"]
    assert int(worker["environment"]["CODEX_SHUTDOWN_GRACE"]) + 30 <= 10 * 60
    (pod,) = [pod for name, pod in pods() if name == "codexbot-worker"]
    (container,) = pod["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert int(env["CODEX_SHUTDOWN_GRACE"]) + 30 <= pod["terminationGracePeriodSeconds"]
