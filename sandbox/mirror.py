"""The engine-side mirror: a labelled volume per repository holding its objects, next to the engine.

Streaming the whole working tree into every task would not meet the warm target, and the worker
may not share a disk with the engine (`DOCKER_HOST` remote). So the objects stay on the engine's
side, in a volume `codexbot-mirror-<repo>` mounted at /mirror in every task of that repository:

1. `refresh(box, ...)` asks the volume which commits it has (`/mirror/codexbot-tips`), sends a
   bundle of only the new ones (`workers.workspace.bundle_since`) with put_archive, and fetches
   it in, as root under `flock`. Root in the sandbox has no capabilities: it can write the
   root-owned mirror, the sandbox user (the agent) can only read it.
2. `checkout(box, sha)` makes /workspace a working tree of `sha` whose objects are borrowed from
   /mirror (git alternates): no object is copied. A workspace that came prepared (copied up from
   a prepared image) keeps its untracked dependencies and only moves to `sha`; so does one
   layered on the repository's tree (`sandbox.layers`), which writes only what differs.
"""

from __future__ import annotations

import hashlib
import io
import re
import shlex
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from sandbox.container import Sandbox
from sandbox.labels import CREATED_LABEL, KIND_LABEL, REPO_LABEL, WORKER_LABEL, worker_identity
from sandbox.output import SandboxError

MIRROR_PATH = "/mirror"
TIPS_FILE = f"{MIRROR_PATH}/codexbot-tips"
INCOMING = f"{MIRROR_PATH}/incoming"
CREATOR_LABEL = "codexbot.created-by-task"  # not codexbot.task: a task's cleanup must keep it
LOCK_WAIT_SECONDS = 120

REFRESH_SCRIPT = f"""set -e
cd {MIRROR_PATH}
exec 9>>{MIRROR_PATH}/.lock
flock -w {LOCK_WAIT_SECONDS} 9
test -f HEAD || git init -q --bare . && git config gc.auto 0
for bundle in {INCOMING}/*.bundle; do
  test -f "$bundle" || continue
  git fetch -q "$bundle" '+refs/*:refs/*'
  rm -f "$bundle"
done
git for-each-ref --format='%(objectname)' > codexbot-tips.new
mv codexbot-tips.new codexbot-tips
chmod -R a+rX {MIRROR_PATH}
"""


@dataclass(frozen=True)
class Refreshed:
    sent_bytes: int
    had_commits: int
    milliseconds: int


def mirror_volume_name(full_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", full_name).strip("-.")[:60] or "repo"
    return f"codexbot-mirror-{safe}-{hashlib.sha256(full_name.encode()).hexdigest()[:10]}"


def ensure_mirror_volume(client: docker.DockerClient, full_name: str, task_id: str) -> str:
    """The repository's mirror volume, created (labelled) when missing; returns its name."""
    name = mirror_volume_name(full_name)
    try:
        volume = client.volumes.get(name)
    except docker.errors.NotFound:
        from datetime import UTC, datetime

        volume = client.volumes.create(
            name=name,
            labels={
                KIND_LABEL: "mirror",
                REPO_LABEL: full_name,
                CREATOR_LABEL: task_id,
                CREATED_LABEL: datetime.now(UTC).isoformat(timespec="seconds"),
                WORKER_LABEL: worker_identity(),
            },
        )
    if (volume.attrs.get("Labels") or {}).get(REPO_LABEL) != full_name:
        raise SandboxError(f"volume {name} exists but is not the mirror of {full_name}")
    return name


def mirror_mount(volume: str) -> dict[str, dict[str, str]]:
    return {volume: {"bind": MIRROR_PATH, "mode": "rw"}}


def _tips(box: Sandbox) -> set[str]:
    reply = box.run_raw(f"cat {TIPS_FILE} 2>/dev/null || true", timeout=30, workdir="/")
    return {
        line for line in reply.data().decode().split() if re.fullmatch(r"[0-9a-f]{40,64}", line)
    }


def refresh(
    box: Sandbox, make_bundle: Callable[[set[str], Path], bool], *, need: str | None = None
) -> Refreshed:
    """Bring /mirror up to date with a bundle of only what it lacks.

    `make_bundle(have, path)` writes the bundle (returns False when nothing is new): usually
    `lambda have, path: workers.workspace.bundle_since(host_mirror, have, path)`. With `need`
    (a commit), nothing is sent when /mirror already holds that commit: other branches' news can
    wait for a task that needs them (sending them costs a root `docker exec`, ~60 ms).
    """
    started = time.monotonic()
    have = _tips(box)
    if need is not None and (need in have or _holds(box, need)):
        return Refreshed(0, len(have), int((time.monotonic() - started) * 1000))
    sent = 0
    with tempfile.TemporaryDirectory(prefix="codexbot-bundle-") as scratch:
        bundle = Path(scratch) / "new.bundle"
        if make_bundle(have, bundle):
            sent = bundle.stat().st_size
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w") as tar:
                directory = tarfile.TarInfo("incoming")
                directory.type, directory.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(directory)
                info = tarfile.TarInfo(f"incoming/{time.time_ns()}.bundle")
                info.size, info.mode = sent, 0o644
                with bundle.open("rb") as data:
                    tar.addfile(info, data)
            archive.seek(0)
            box.put_archive(MIRROR_PATH, archive)
    if sent or not have:
        code, output = box.exec_as_root(["sh", "-c", REFRESH_SCRIPT])
        if code != 0:
            raise SandboxError(
                f"could not refresh the mirror ({code}): {output.decode(errors='replace')[-2000:]}"
            )
    return Refreshed(
        sent_bytes=sent,
        had_commits=len(have),
        milliseconds=int((time.monotonic() - started) * 1000),
    )


def _holds(box: Sandbox, sha: str) -> bool:
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        return False
    reply = box.run_raw(
        f"git --git-dir={MIRROR_PATH} cat-file -e {sha}^{{commit}}", timeout=30, workdir="/"
    )
    return reply.exit_code == 0


def checkout_script(sha: str) -> str:
    quoted = shlex.quote(sha)
    return (
        "set -e; cd /workspace; "
        "if [ ! -e .git ]; then git init -q . && "
        f"echo {MIRROR_PATH}/objects > .git/objects/info/alternates; fi; "
        f"git -c advice.detachedHead=false checkout -q -f --detach {quoted}; "
        "git rev-parse HEAD"
    )


def checkout(box: Sandbox, sha: str) -> None:
    """Make /workspace a working tree of `sha` borrowing the mirror's objects."""
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        raise SandboxError(f"not a commit id: {sha!r}")
    reply = box.run_raw(checkout_script(sha), timeout=600, workdir="/workspace")
    if reply.exit_code != 0 or reply.data().decode().strip().splitlines()[-1:] != [sha]:
        raise SandboxError(
            f"could not check out {sha} in the sandbox ({reply.exit_code}): {reply.text()[-2000:]}"
        )
