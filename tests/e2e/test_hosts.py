"""The bot as several hosts on this one machine: Redis, the receiver and two task-worker hosts,
each in its own network namespace with its own address, joined by a bridge; the simulated
GitHub and model listen on the bridge's address. Each host has its own data directory (no shared
disk); the workers reach the one Docker engine through its socket.

A host is cut off (its link down) or killed mid-task: the other host goes on.

Needs root for `ip netns`; skipped, saying so, without it. The namespaces, links and processes
are removed in teardown whatever happened.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import requests
from redis import Redis
from rq.job import Job

from sandbox.labels import TASK_LABEL, WORKER_LABEL
from sim.stack import DEMO_REPO, DEMO_SCRIPTS, Stack, wait_until
from workers import tasks

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SCRIPTS = Path(__file__).parent / "scripts"
REPO = "octo-org/textstats"
HELD = "Hold a host busy"  # tests/e2e/scripts/hosts_hold.json: waits for /tmp/go in step 1
HOSTS = {"redis": 2, "receiver": 3, "a": 4, "b": 5}  # the last byte of each host's address
REDIS_PORT = 6379
LEASES = importlib.util.find_spec("workers.lease") is not None
needs_leases = pytest.mark.skipif(
    not LEASES,
    reason="a task whose host was lost is run again only with task leases (workers/lease.py, "
    "issue 13 'A task always ends, and ends once'), not merged yet",
)


def ip(*args: str, netns: str | None = None) -> None:
    where = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*where, "ip", *args], check=True, capture_output=True, text=True)


def netns_problem() -> str | None:
    """Why ``ip netns`` cannot be used here, or None: tried, not guessed."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"cbh-probe-{secrets.token_hex(3)}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if added.returncode != 0:
        return f"`ip netns add` failed (it needs root): {added.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=True)
    return None


@dataclass
class Network:
    """A bridge in this namespace, one namespace per host linked to it, addresses in a /24 of
    10.203.0.0/16 that no route here uses yet. Traffic stays among them and this namespace."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    subnet: str = ""
    namespaces: dict[str, str] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"cbh{self.tag}br"

    @property
    def hub(self) -> str:
        """This namespace's address on the bridge: where the simulator and the model listen."""
        return f"{self.subnet}.1"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{HOSTS[host]}"

    def link(self, host: str) -> str:
        return f"cbh{self.tag}{host[:3]}"  # at most 15 characters, as Linux wants

    def create(self) -> None:
        routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
        self.subnet = next(
            f"10.203.{n}" for n in range(int(self.tag, 16) % 200 + 1, 255)
            if f"10.203.{n}." not in routes
        )  # fmt: skip
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.hub}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for host in HOSTS:
            namespace = f"cbh-{self.tag}-{host}"
            subprocess.run(["ip", "netns", "add", namespace], check=True, capture_output=True)
            self.namespaces[host] = namespace
            ip("link", "add", self.link(host), "type", "veth", "peer", "name", "eth0",
               "netns", namespace)  # fmt: skip
            ip("link", "set", self.link(host), "master", self.bridge, "up")
            ip("link", "set", "lo", "up", netns=namespace)
            ip("addr", "add", f"{self.address(host)}/24", "dev", "eth0", netns=namespace)
            ip("link", "set", "eth0", "up", netns=namespace)

    def cut(self, host: str) -> None:
        """The host loses the network, as a pulled cable: its link goes down."""
        ip("link", "set", "eth0", "down", netns=self.namespaces[host])

    def restore(self, host: str) -> None:
        ip("link", "set", "eth0", "up", netns=self.namespaces[host])

    def remove(self) -> None:
        for host, namespace in self.namespaces.items():
            subprocess.run(["ip", "link", "delete", self.link(host)], capture_output=True)
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)


@dataclass
class HostsStack(Stack):
    """The stack's processes placed on hosts: each started in its host's namespace, with its
    host's own data directory. A process named ``a`` or ``a-...`` runs on host ``a``."""

    network: Network = field(default_factory=Network)

    def host_of(self, name: str) -> str:
        return name.split("-")[0]

    def host_dir(self, host: str) -> Path:
        return self.data_dir / "hosts" / host

    def command(self, name: str, args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command(name, args)
        host = self.host_of(name)
        env["CODEX_DATA_DIR"] = str(self.host_dir(host))
        return ["ip", "netns", "exec", self.network.namespaces[host], *argv], env

    def kill_host(self, host: str) -> None:
        """SIGKILL every process of the host (a task worker's work horse is in its group)."""
        for name in [n for n in self.processes if self.host_of(n) == host]:
            process = self.processes.pop(name)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def network() -> Iterator[Network]:
    problem = netns_problem()
    if problem:
        pytest.skip(f"the multi-host test needs network namespaces: {problem}")
    network = Network()
    try:
        network.create()
        yield network
    finally:
        network.remove()


@pytest.fixture
def redis_host(network: Network, tmp_path: Path) -> Iterator[str]:
    """A Redis of its own, alone on its host."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", network.namespaces["redis"], "redis-server",
         "--bind", network.address("redis"), "--port", str(REDIS_PORT), "--save", "",
         "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"redis://{network.address('redis')}:{REDIS_PORT}/0"
    client = Redis.from_url(url, socket_connect_timeout=1)
    try:
        wait_until(lambda: _pings(client), 30, "Redis on its host")
        yield url
    finally:
        client.close()
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not listening yet
        return False


@pytest.fixture
def hosts(network: Network, redis_host: str, tmp_path: Path) -> Iterator[HostsStack]:
    """Redis, the receiver (with the fast lane's worker) and task-worker host ``a``; the test
    starts ``b`` when it wants it."""
    stack = HostsStack(
        data_dir=tmp_path / "stack",
        redis_url=redis_host,
        script_dirs=(DEMO_SCRIPTS, SCRIPTS),
        run_worker=False,
        stand_ins_host=network.hub,
        receiver_host=network.address("receiver"),
        network=network,
    )
    stack.extra_env.update(CODEX_PUBLIC_URL=stack.receiver_url, CODEX_LEASE_SECONDS="6")
    with stack:
        stack.start_fast_worker("receiver-fast")
        stack.start_task_worker("a")
        yield stack


def seed(stack: Stack) -> tuple[int, int]:
    """The demo repository with two issues: one whose task holds its host, one that runs."""
    _, demo = stack.seed(DEMO_REPO, full_name=REPO)
    held = stack.github.create_issue(REPO, HELD, "Wait for the test, then note it.")
    return held["number"], demo["number"]


def hold_on_a(stack: HostsStack, number: int) -> str:
    """Start the held task while ``a`` is the only task worker; return once its agent waits."""
    _, task_id = stack.label(REPO, number)
    wait_until(
        lambda: any(r["type"] == "response" for r in stack.trajectory(task_id)),
        120,
        "the held task's agent at its first command, on host a",
    )
    assert Job.fetch(task_id, connection=stack.redis).worker_name.startswith("a-")
    return task_id


def sandboxes(task_id: str, host: str | None = None) -> list:
    """The task's containers (all of them, or those host ``host``'s worker made)."""
    client = docker.from_env()
    try:
        found = client.containers.list(
            all=True, filters={"label": f"{TASK_LABEL}={task_id}"}, ignore_removed=True
        )
    finally:
        client.close()
    return [c for c in found if host is None or c.labels[WORKER_LABEL].startswith(f"{host}-")]


def release(task_id: str, host: str) -> bool:
    """Let host ``host``'s sandbox of the task past its first command."""
    for container in sandboxes(task_id, host):
        if container.status == "running":
            container.exec_run(["touch", "/tmp/go"])
    return True


def task_state(stack: Stack, task_id: str) -> str:
    record = tasks.load(stack.redis, task_id)
    return record.state if record else ""


def pulls_for(stack: Stack, number: int) -> list[dict]:
    return [p for p in stack.github.pulls(REPO) if f"#{number}" in (p.get("body") or "")]


def test_with_a_host_cut_off_the_other_takes_new_tasks_and_any_receiver_shows_them(
    hosts: HostsStack, network: Network
) -> None:
    held, demo = seed(hosts)
    hold_on_a(hosts, held)
    hosts.start_task_worker("b")
    network.cut("a")

    _, task_id = hosts.label(REPO, demo)
    outcome = hosts.wait_for_task(task_id, timeout=300)

    assert Job.fetch(task_id, connection=hosts.redis).worker_name.startswith("b-")
    assert outcome["pr_url"] and len(pulls_for(hosts, demo)) == 1
    # The progress comment links to the task's page, served by the receiver's host, which has
    # none of host b's disk.
    comments = "\n".join(c["body"] for c in hosts.github.issue_comments(REPO, demo))
    link = re.search(rf"http://\S+/tasks/{task_id}", comments)
    assert link, comments
    page = requests.get(link.group(0), timeout=10)
    assert page.status_code == 200, page.text[:500]
    assert f"codex-bot task {task_id}" in page.text and "finished" in page.text


@needs_leases
def test_a_task_whose_host_is_cut_off_is_finished_by_the_other_and_published_once(
    hosts: HostsStack, network: Network
) -> None:
    held, _ = seed(hosts)
    task_id = hold_on_a(hosts, held)
    hosts.start_task_worker("b")
    network.cut("a")

    wait_until(lambda: sandboxes(task_id, "b"), 120, "host b to run the task again")
    wait_until(
        lambda: release(task_id, "b") and task_state(hosts, task_id) == "done",
        240,
        "host b to finish the task host a lost",
        interval=0.5,
    )
    network.restore("a")
    release(task_id, "a")  # if host a's attempt still waits, it goes on now

    finished_by_b(hosts, task_id, held)


@needs_leases
def test_a_task_whose_host_is_killed_is_finished_by_the_other_and_published_once(
    hosts: HostsStack,
) -> None:
    held, _ = seed(hosts)
    task_id = hold_on_a(hosts, held)
    hosts.start_task_worker("b")
    hosts.kill_host("a")

    wait_until(
        lambda: release(task_id, "b") and task_state(hosts, task_id) == "done",
        240,
        "host b to finish the task of the killed host a",
        interval=0.5,
    )
    finished_by_b(hosts, task_id, held)


def finished_by_b(stack: HostsStack, task_id: str, number: int) -> None:
    """Once every attempt has ended (no sandbox of the task left): one PR, one push to its
    branch, the task still done; what host a did after it came back was refused."""
    wait_until(lambda: not sandboxes(task_id), 180, "every attempt at the task to end")
    (pull,) = pulls_for(stack, number)
    branch = pull["head"]["ref"]
    pushes = [p for p in stack.github.pushes if p.ref == f"refs/heads/{branch}"]
    assert len(pushes) == 1, pushes
    assert task_state(stack, task_id) == "done"
    said = [
        c["body"] for c in stack.github.issue_comments(REPO, number) if "codex-bot" in c["body"]
    ]
    assert "Done" in said[-1] and not any("Failed" in body for body in said), said
    page = requests.get(f"{stack.receiver_url}/tasks/{task_id}", timeout=10)
    assert page.status_code == 200 and "finished" in page.text
