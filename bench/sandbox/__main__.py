# ruff: noqa: E501 - benchmark tables read better on one line
"""Five sandbox measurements, each beside its baseline from the same run; prints JSON.

    .venv/bin/python -m bench.sandbox [--quick]

1. per-command overhead of `true`: the exec server vs `docker exec` (CLI) and vs an API exec
   (create, start, inspect: what the skeleton did);
2. workspace ready in the container for a repository with a ~100 MB pack: warm (engine-side
   mirror, nothing or one small commit new; /workspace layered on the repository's tree, so only
   what differs is written; container start reported beside it, so no cost hides there) vs a
   fresh `git clone` over the simulator's smart HTTP (and that clone streamed into the container,
   as the skeleton did). The in-memory variant (tmpfs workspace) checks the whole tree out;
3. container ready (create, start, exec server answering): median;
4. setup reuse: a task whose key is prepared skips setup (pip installs wheels from a wheelhouse);
5. 8 concurrent tasks on 2 cores (tests and commands in their sandboxes) while the receiver
   answers signed webhook deliveries: receiver latency p50/p99 vs idle.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import requests
from redis import Redis

from codexbot.logs import configure_logging
from sandbox.container import Sandbox
from sandbox.hardening import SandboxLimits
from sandbox.image import DEFAULT_IMAGE, ensure_image
from sandbox.labels import remove_task_containers
from sandbox.mirror import mirror_volume_name
from sandbox.prepared import EnvSpec, prepare_environment
from sim.stack import APP_ID, Stack
from workers.checkout import clone
from workers.github import git_base_url
from workers.githubapp import GitHubApp
from workers.repoconfig import RepoConfig
from workers.workspace import MirrorCache, task_sandbox

IDENTITY = ["-c", "user.name=Bench", "-c", "user.email=bench@example.com"]
REDIS_URL = os.environ.get("CODEX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_ms(samples: list[float]) -> float:
    return ms(statistics.median(samples))


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *IDENTITY, *args], cwd=repo, check=True, capture_output=True)
    return done.stdout.decode().strip()


# ---------------------------------------------------------------------------- 1. exec overhead


def command_overhead(client: docker.DockerClient, runs: int) -> dict[str, Any]:
    task = f"bench-exec-{uuid.uuid4().hex[:6]}"
    with Sandbox(client, image=DEFAULT_IMAGE, task_id=task) as box:
        for _ in range(5):
            box.exec("true")
        server = [timed(lambda: box.exec("true")) for _ in range(runs)]

        def api_exec() -> None:
            exec_id = client.api.exec_create(box.container_id, ["true"], user="1000:1000")["Id"]
            client.api.exec_start(exec_id)
            client.api.exec_inspect(exec_id)

        api = [timed(api_exec) for _ in range(runs)]
        cli = [
            timed(
                lambda: subprocess.run(
                    ["docker", "exec", box.container_id, "true"], check=True, capture_output=True
                )
            )
            for _ in range(max(runs // 2, 5))
        ]
    result = {
        "exec_server_median_ms": median_ms(server),
        "exec_server_p90_ms": ms(sorted(server)[int(len(server) * 0.9)]),
        "baseline_docker_exec_cli_median_ms": median_ms(cli),
        "baseline_docker_exec_api_median_ms": median_ms(api),
    }
    result["speedup_vs_cli"] = round(statistics.median(cli) / statistics.median(server), 1)
    result["speedup_vs_api"] = round(statistics.median(api) / statistics.median(server), 1)
    result["target"] = "median <= 15 ms and >= 5x lower than docker exec"
    result["met"] = result["exec_server_median_ms"] <= 15 and result["speedup_vs_cli"] >= 5
    return result


# ---------------------------------------------------------------------------- 2. workspace


def make_big_repo(path: Path, pack_mb: int) -> None:
    """History with ~pack_mb of incompressible blobs; the tip's tree holds about a quarter."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    src = path / "src"
    src.mkdir()
    for index in range(200):
        (src / f"module_{index}.py").write_text(f"def f{index}(x):\n    return x + {index}\n" * 20)
    data = path / "data"
    data.mkdir()
    blob = 2 * 1024 * 1024
    rounds = max(pack_mb // 2 // 12, 1)
    for round_ in range(rounds):
        for slot in range(12):
            (data / f"blob_{slot}.bin").write_bytes(os.urandom(blob))
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"round {round_}")
    git(path, "repack", "-adq")


def workspace_ready(
    client: docker.DockerClient, stack: Stack, tmp: Path, pack_mb: int, runs: int
) -> dict[str, Any]:
    source = tmp / "big-src"
    make_big_repo(source, pack_mb)
    full_name = "bench-org/big"
    seed = tmp / "seed"
    seed.mkdir()
    (seed / "README.md").write_text("replaced by the pushed history\n")
    stack.github.create_repo(full_name, seed)
    bare = stack.github.repos_root / "bench-org" / "big.git"
    subprocess.run(["git", "config", "receive.denyNonFastForwards", "false"], cwd=bare, check=True)
    subprocess.run(["git", "push", "-q", "--force", str(bare), "main:main"], cwd=source, check=True)
    pack_bytes = sum(p.stat().st_size for p in (bare / "objects" / "pack").glob("*.pack"))
    app = GitHubApp(
        app_id=APP_ID, private_key=stack.private_key.decode(), api_url=stack.github.api_url
    )
    token = app.installation_token(1)
    git_url = f"{git_base_url(stack.github.api_url)}/{full_name}.git"

    # Baseline: a fresh clone over smart HTTP, then (as the skeleton did) streamed in.
    fresh_clone, fresh_total = [], []
    for run in range(2):
        dest = tmp / f"fresh-{run}"
        started = time.perf_counter()
        start = clone(git_url, dest, token=token)
        cloned = time.perf_counter() - started
        task = f"bench-fresh-{uuid.uuid4().hex[:6]}"
        with Sandbox(client, image=DEFAULT_IMAGE, task_id=task) as box:
            streamed = timed(lambda: box.put_workspace(start.path))  # noqa: B023 - called at once
        fresh_clone.append(cloned)
        fresh_total.append(cloned + streamed)
        shutil.rmtree(dest)

    cache = MirrorCache(tmp / "mirrors")
    redis = Redis.from_url(REDIS_URL)
    config = RepoConfig()

    def one_task(label: str, limits: SandboxLimits = SandboxLimits()) -> dict[str, int]:  # noqa: B008
        mirror = cache.update(full_name, git_url, token=token)
        start = cache.checkout(mirror, tmp / f"work-{uuid.uuid4().hex[:6]}", git_url=git_url)
        timings: dict[str, int] = {}
        with task_sandbox(
            client,
            redis,
            base_image=DEFAULT_IMAGE,
            config=config,
            start=start,
            host_mirror=mirror,
            repo=full_name,
            task_id=f"bench-{label}-{uuid.uuid4().hex[:6]}",
            limits=limits,
            timings=timings,
        ) as (box, _):
            assert box.exec("git rev-parse HEAD").output.strip() == start.base_sha
        shutil.rmtree(start.path)
        return timings

    cold = one_task("cold")
    warm_runs = [one_task("warm") for _ in range(runs)]
    warm = [run["workspace"] for run in warm_runs]
    in_memory = SandboxLimits(workspace_in_memory=True, workspace_bytes=512 * 1024**2)
    warm_memory = [one_task("warm-mem", in_memory)["workspace"] for _ in range(runs)]
    # One small new commit upstream: the mirror fetches it, the bundle carries only it.
    clone_dir = tmp / "pusher"
    subprocess.run(["git", "clone", "-q", str(bare), str(clone_dir)], check=True)
    (clone_dir / "src" / "module_0.py").write_text("def f0(x):\n    return x\n")
    git(clone_dir, "commit", "-q", "-am", "small change")
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=clone_dir, check=True)
    with_new = one_task("new-commit")
    host_update = timed(lambda: cache.update(full_name, git_url, token=token))
    for volume in client.volumes.list(filters={"name": mirror_volume_name(full_name)}):
        volume.remove(force=True)
    for volume in client.volumes.list(filters={"label": f"codexbot.repo={full_name}"}):
        volume.remove(force=True)  # its trees: each run's history is new
    redis.delete(f"codexbot:trees:{full_name}")
    result = {
        "pack_mb": round(pack_bytes / 1e6, 1),
        "worktree_files": 212,
        "warm_median_ms": median_ms([w / 1000 for w in warm]),
        "warm_container_start_median_ms": median_ms(
            [run["container_start"] / 1000 for run in warm_runs]
        ),
        "warm_with_one_new_commit_ms": with_new["workspace"],
        "warm_workspace_in_memory_median_ms": median_ms([w / 1000 for w in warm_memory]),
        "cold_first_task_ms": cold["workspace"],
        "host_mirror_fetch_nothing_new_ms": ms(host_update),
        "baseline_fresh_clone_http_ms": median_ms(fresh_clone),
        "baseline_fresh_clone_and_stream_in_ms": median_ms(fresh_total),
    }
    result["speedup_vs_fresh_clone"] = round(
        result["baseline_fresh_clone_http_ms"] / max(result["warm_median_ms"], 0.1), 1
    )
    result["speedup_in_memory_vs_fresh_clone"] = round(
        result["baseline_fresh_clone_http_ms"]
        / max(result["warm_workspace_in_memory_median_ms"], 0.1),
        1,
    )
    result["target"] = "warm <= 1 s and >= 10x faster than a fresh clone over smart HTTP"
    result["met"] = result["warm_median_ms"] <= 1000 and result["speedup_vs_fresh_clone"] >= 10
    return result


# ---------------------------------------------------------------------------- 3. container ready


def container_ready(client: docker.DockerClient, runs: int) -> dict[str, Any]:
    samples = []
    for _ in range(runs):
        box = Sandbox(client, image=DEFAULT_IMAGE, task_id=f"bench-ready-{uuid.uuid4().hex[:6]}")
        started = time.perf_counter()
        box.start()
        box.exec("true")
        samples.append(time.perf_counter() - started)
        box.remove()
    return {
        "median_ms": median_ms(samples),
        "p90_ms": ms(sorted(samples)[int(len(samples) * 0.9)]),
        "baseline_skeleton_readme_container_start_ms": 202,
        "target": "median <= 400 ms",
        "met": median_ms(samples) <= 400,
    }


# ---------------------------------------------------------------------------- 4. setup reuse


def make_wheel(directory: Path, name: str) -> None:
    import base64
    import zipfile

    dist = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 1\n" + os.urandom(0).hex().encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    for index in range(50):
        files[f"{name}/mod_{index}.py"] = (f"def g{index}():\n    return {index}\n" * 50).encode()
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(data)}\n"
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    with zipfile.ZipFile(directory / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)


def setup_reuse(client: docker.DockerClient, tmp: Path) -> dict[str, Any]:
    project = tmp / "wheelproj"
    (project / "wheels").mkdir(parents=True)
    names = [f"benchpkg{i}" for i in range(6)]
    for name in names:
        make_wheel(project / "wheels", name)
    (project / "requirements.txt").write_text(
        "".join(f"{n}==1.0\n" for n in names) + f"# {uuid.uuid4()}\n"
    )
    redis = Redis.from_url(REDIS_URL)
    spec = EnvSpec.build(
        (
            "python3 -m venv .venv",
            ".venv/bin/pip install -q --no-index --find-links wheels -r requirements.txt",
        ),
        {},
        {"requirements.txt": (project / "requirements.txt").read_bytes()},
    )

    def populate(box: Sandbox) -> None:
        box.put_workspace(project)

    def prepare() -> Any:
        return prepare_environment(
            client,
            redis,
            base_image=DEFAULT_IMAGE,
            spec=spec,
            repo="bench/wheels",
            task_id=f"bench-setup-{uuid.uuid4().hex[:6]}",
            populate=populate,
        )

    started = time.perf_counter()
    first = prepare()
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second = prepare()
    second_s = time.perf_counter() - started
    assert first.built and not second.built and first.image == second.image
    client.images.remove(first.image, force=True)
    return {
        "setup": "python3 -m venv + pip install 6 wheels from a local wheelhouse",
        "first_task_setup_and_commit_ms": ms(first_s),
        "second_task_reuse_ms": ms(second_s),
        "time_saved_ms": ms(first_s - second_s),
        "setup_commands_run_second_time": 0,
        "met": not second.built,
    }


# ---------------------------------------------------------------------------- 5. concurrency


def receiver_latency(stack: Stack, stop: threading.Event, out: list[float]) -> None:
    session = requests.Session()
    while not stop.is_set():
        body = json.dumps({"zen": "bench", "hook_id": 1}).encode()
        signature = (
            "sha256=" + hmac.new(stack.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        )
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
        }
        started = time.perf_counter()
        response = session.post(
            f"{stack.receiver_url}/webhook", data=body, headers=headers, timeout=10
        )
        out.append(time.perf_counter() - started)
        assert response.status_code < 500, response.text
        stop.wait(0.02)


def concurrency(client: docker.DockerClient, stack: Stack, seconds: float) -> dict[str, Any]:
    idle: list[float] = []
    stop = threading.Event()
    probe = threading.Thread(target=receiver_latency, args=(stack, stop, idle))
    probe.start()
    time.sleep(min(seconds, 5))
    stop.set()
    probe.join()

    loaded: list[float] = []
    commands = [0]
    lock = threading.Lock()
    tasks_done = []

    def task(index: int) -> None:
        deadline = time.monotonic() + seconds
        with Sandbox(
            client, image=DEFAULT_IMAGE, task_id=f"bench-load-{index}-{uuid.uuid4().hex[:6]}"
        ) as box:
            while time.monotonic() < deadline:
                box.exec("python3 -c 'sum(i * i for i in range(300000))'", timeout=60)
                box.exec("ls -la /usr/lib | head -50 | wc -l; git --version", timeout=60)
                with lock:
                    commands[0] += 2
        tasks_done.append(index)

    stop = threading.Event()
    probe = threading.Thread(target=receiver_latency, args=(stack, stop, loaded))
    workers = [threading.Thread(target=task, args=(i,)) for i in range(8)]
    probe.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    probe.join()

    def pct(samples: list[float], q: float) -> float:
        return ms(sorted(samples)[min(int(len(samples) * q), len(samples) - 1)])

    return {
        "tasks": len(tasks_done),
        "commands_run": commands[0],
        "seconds": seconds,
        "receiver_requests": len(loaded),
        "receiver_p50_ms": pct(loaded, 0.5),
        "receiver_p99_ms": pct(loaded, 0.99),
        "receiver_max_ms": pct(loaded, 1.0),
        "baseline_idle_p50_ms": pct(idle, 0.5),
        "baseline_idle_p99_ms": pct(idle, 0.99),
        "target": "receiver p99 < 50 ms",
        "met": pct(loaded, 0.99) < 50,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs, a 24 MB pack")
    parser.add_argument("--only", action="append", help="run only these (exec, workspace, ...)")
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    client = docker.from_env()
    ensure_image(client, DEFAULT_IMAGE)
    runs = 10 if args.quick else 40
    wanted = set(args.only or ["exec", "workspace", "container", "setup", "concurrency"])
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        with Stack(data_dir=tmp / "stack", redis_url=REDIS_URL, run_worker=False) as stack:
            if "exec" in wanted:
                results["command_overhead"] = command_overhead(client, runs * 2)
            if "container" in wanted:
                results["container_ready"] = container_ready(client, runs // 2)
            if "workspace" in wanted:
                results["workspace_ready"] = workspace_ready(
                    client, stack, tmp, 24 if args.quick else 100, 3 if args.quick else 7
                )
            if "setup" in wanted:
                results["setup_reuse"] = setup_reuse(client, tmp)
            if "concurrency" in wanted:
                results["concurrent_tasks"] = concurrency(client, stack, 10 if args.quick else 30)
    for container in client.containers.list(all=True, filters={"name": "codexbot-bench-"}):
        remove_task_containers(client, container.labels.get("codexbot.task", ""))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
