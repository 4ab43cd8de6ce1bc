"""The worker's bare mirror of each repository, and task workspaces made from it in milliseconds.

    cache = MirrorCache(settings.codex_data_dir / "mirrors")
    mirror = cache.update("octo/widgets", repo.git_url, token=repo.token)   # clone or fetch
    start = cache.checkout(mirror, workdir / "repo", git_url=repo.git_url)  # clone --shared

The first task of a repository clones it `--mirror`; later ones `git fetch --prune` (only the new
objects travel). A workspace is `git clone --shared` of the mirror: no object is copied, so it is
ready in milliseconds whatever the size of the history. Its `origin` is the real remote, so the
publish step pushes there as before. The mirror never runs `gc` on its own (`gc.auto=0`): a
shared clone borrows its objects. A file lock per repository serialises workers on one host.

`bundle_since(mirror, have)` makes the bundle of only the commits the engine side lacks; the
sandbox's engine-side mirror (`sandbox.mirror`) is refreshed with it. `task_sandbox(...)` puts it
all together for the job: prepared environment (setup once per key), container, workspace. Unless
setup made a workspace of its own (or the workspace is to be in memory), /workspace is layered on
the repository's tree (`sandbox.layers`), so a warm task writes only the files that differ.
"""

from __future__ import annotations

import contextvars
import dataclasses
import fcntl
import functools
import hashlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import structlog
from redis import Redis

from sandbox import layers, pool
from sandbox import mirror as engine_mirror
from sandbox.container import Sandbox
from sandbox.hardening import WORKSPACE, SandboxLimits
from sandbox.labels import REPO_LABEL
from sandbox.mirror import ensure_mirror_volume, mirror_mount
from sandbox.output import SandboxError
from sandbox.prepared import EnvSpec, Prepared, is_lockfile, prepare_environment
from workers.checkout import Checkout, Git, GitError
from workers.repoconfig import RepoConfig

log = structlog.get_logger(__name__)

LOCK_TIMEOUT_SECONDS = 600
BUNDLE_TIMEOUT_SECONDS = 600


@dataclass
class LayerRefusals:
    """What this process learnt cannot have a layered workspace; plain ones from then on."""

    engine: bool = False  # the engine refused one (no overlay volumes, say)
    images: set[str] = field(default_factory=set)  # /workspace came out root's on these


_layer_refusals = LayerRefusals()


def mirror_dir_name(full_name: str) -> str:
    """A filesystem-safe, collision-free directory name for `owner/name`.

    >>> mirror_dir_name("octo/widgets")[:13]
    'octo-widgets-'
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", full_name).strip("-.")[:80] or "repo"
    return f"{safe}-{hashlib.sha256(full_name.encode()).hexdigest()[:10]}.git"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class MirrorCache:
    """Bare mirrors under `root`, one per repository."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, full_name: str) -> Path:
        return self.root / mirror_dir_name(full_name)

    def update(self, full_name: str, git_url: str, *, token: str | None) -> Path:
        """Clone the mirror the first time, fetch what is new after; returns its path."""
        mirror = self.path(full_name)
        with _locked(mirror.with_suffix(".lock")):
            if not (mirror / "HEAD").exists():
                self.root.mkdir(parents=True, exist_ok=True)
                partial = mirror.with_suffix(".partial")
                subprocess.run(["rm", "-rf", str(partial)], check=False)
                Git(self.root, token=token)(
                    "clone", "--quiet", "--bare", "--no-tags", "--", git_url, partial.name
                )
                git = Git(partial, token=token)
                git("config", "gc.auto", "0")
                git("config", "remote.origin.fetch", "+refs/heads/*:refs/heads/*")
                git("config", "--add", "remote.origin.fetch", "+refs/tags/*:refs/tags/*")
                partial.rename(mirror)
            else:
                git = Git(mirror, token=token)
                git("remote", "set-url", "origin", git_url)
                git("fetch", "--quiet", "--prune", "origin")
        return mirror

    def checkout(
        self, mirror: Path, dest: Path, *, git_url: str, branch: str | None = None
    ) -> Checkout:
        """A working tree at `dest` sharing the mirror's objects; `origin` is the real remote."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        args = ["clone", "--quiet", "--shared", "--no-tags"]
        if branch:
            args += ["--branch", branch]
        Git(dest.parent)(*args, "--", str(mirror), dest.name)
        inside = Git(dest)
        inside("remote", "set-url", "origin", git_url)
        return Checkout(
            path=dest,
            base_branch=inside("rev-parse", "--abbrev-ref", "HEAD"),
            base_sha=inside("rev-parse", "HEAD"),
        )


def tips(mirror: Path) -> set[str]:
    """The commits the mirror's refs point at."""
    out = Git(mirror)("for-each-ref", "--format=%(objectname)")
    return {line for line in out.split() if line}


def bundle_since(mirror: Path, have: set[str], into: Path) -> bool:
    """Write a bundle of every ref (branches, tags, kept commits), minus what `have` reaches.

    Returns False when there is nothing new (git refuses an empty bundle). Commits in `have`
    that the mirror does not know (a force-push made them unreachable) are ignored.
    """
    git = Git(mirror)
    known = [sha for sha in sorted(have) if _has_commit(mirror, sha)]
    try:
        git(
            "bundle",
            "create",
            "--quiet",
            str(into),
            "--all",  # branches, tags and refs/codexbot/ (commits only a checkout had)
            *[f"^{s}" for s in known],
        )
    except GitError as error:
        if "empty bundle" in str(error):
            return False
        raise
    return True


def keep_commit(mirror: Path, checkout: Path, sha: str) -> None:
    """Make sure the mirror holds `sha` (a fork's PR head fetched into the checkout only).

    Kept under refs/codexbot/, which `fetch --prune` of branches and tags never touches.
    """
    if _has_commit(mirror, sha):
        return
    with _locked(mirror.with_suffix(".lock")):
        Git(mirror)("fetch", "--quiet", str(checkout), f"+{sha}:refs/codexbot/commits/{sha}")


def files_between(mirror: Path, a: str, b: str) -> int:
    """How many paths differ between two commits of the mirror (very many if one is unknown)."""
    if a == b:
        return 0
    try:
        return Git(mirror)("diff", "--name-only", "--no-renames", "-z", a, b).count("\0")
    except GitError:
        return sys.maxsize


def _has_commit(mirror: Path, sha: str) -> bool:
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        return False
    done = subprocess.run(
        ["git", "cat-file", "-e", f"{sha}^{{commit}}"],
        cwd=mirror,
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def lockfile_paths(checkout: Path) -> list[str]:
    """Tracked lockfiles (the names `sandbox.prepared.LOCKFILE_PATTERNS` lists), sorted."""
    listed = Git(checkout)("ls-files", "-z")
    return sorted(path for path in listed.split("\0") if path and is_lockfile(path))


def lockfile_contents(checkout: Path) -> dict[str, bytes]:
    """Path -> bytes of every tracked lockfile in the checkout: part of the environment key."""
    contents = {}
    for path in lockfile_paths(checkout):
        file = checkout / path
        if file.is_file() and not file.is_symlink():
            contents[path] = file.read_bytes()
    return contents


# ---------------------------------------------------------------------------- the task's sandbox


@contextmanager
def task_sandbox(
    client: docker.DockerClient,
    redis: Redis,
    *,
    base_image: str,
    config: RepoConfig,
    start: Checkout,
    host_mirror: Path,
    repo: str,
    task_id: str,
    setup_secrets: Mapping[str, str] | None = None,
    limits: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen dataclass
    timings: dict[str, int] | None = None,
    env_scope: str = "",
    pool_settings: pool.PoolSettings = pool.PoolSettings(size=0),  # noqa: B008 - frozen
    on_prepared: Callable[[], None] | None = None,
) -> Iterator[tuple[Sandbox, Prepared]]:
    """The agent's sandbox for `start`: prepared environment, workspace from the mirror.

    `env_scope` keeps the prepared environment of less trusted code (a fork's) apart from the
    repository's own: setup ran over that code, so its image is never reused for the repository.

    With a pool (`pool_settings.size`), the sandbox is an idle one of the warm pool when one of its
    shape waits (`sandbox.pool`), and one more of that shape is started behind it, in the
    background. Raises `SetupFailed` (before any agent step) when a setup command fails.
    `timings` receives milliseconds for `setup` (0 when reused), `container_start` and
    `workspace`. `on_prepared` is called once the environment is prepared, before the container.
    """
    elapsed_ms = timings if timings is not None else {}
    keep_commit(host_mirror, start.path, start.base_sha)
    volume = ensure_mirror_volume(client, repo, task_id)
    mounts = mirror_mount(volume)

    def refresh(box: Sandbox) -> engine_mirror.Refreshed:
        def make_bundle(have: set[str], into: Path) -> bool:
            return bundle_since(host_mirror, have, into)

        return engine_mirror.refresh(box, make_bundle, need=start.base_sha)

    def populate(box: Sandbox) -> None:
        refresh(box)
        engine_mirror.checkout(box, start.base_sha)

    began = time.monotonic()
    prepared = prepare_environment(
        client,
        redis,
        base_image=config.image or base_image,
        spec=EnvSpec.build(config.setup, config.env_dict, lockfile_contents(start.path)),
        repo=repo,
        scope=env_scope,
        task_id=task_id,
        secrets=setup_secrets,
        populate=populate,
        limits=limits,
        volumes=mounts,
    )
    elapsed_ms["setup"] = prepared.setup_ms if prepared.built else 0
    if on_prepared is not None:
        on_prepared()
    sandbox_args: dict[str, Any] = {  # what every Sandbox of this task is made with
        "image": prepared.image,
        "task_id": task_id,
        "labels": {REPO_LABEL: repo},
        "env": config.env_dict,
        "limits": limits,
        "home_volume": bool(prepared.key),
    }
    shape = pool.Shape(
        image=prepared.image,
        env=tuple(sorted(config.env_dict.items())),
        limits=limits,
        home_volume=bool(prepared.key),
        repo=repo,
        mirror_volume=volume,
    )
    with ExitStack() as stack:
        began = time.monotonic()
        tree = None
        build = None
        taken_shape = shape
        if _layers_fit(prepared, limits):
            distance = functools.partial(files_between, host_mirror)
            newest = layers.newest_tree(client, redis, repo)
            if newest is not None and distance(newest.commit, start.base_sha) <= (
                layers.REBUILD_AFTER_FILES
            ):
                tree = newest
                taken_shape = dataclasses.replace(shape, tree=tree)
            else:
                if newest is None:
                    # The repository's first task: its mirror has nothing to reuse yet, so a
                    # pooled sandbox with an empty mirror of its own does as well.
                    taken_shape = dataclasses.replace(shape, repo="", mirror_volume="")
                # None near this commit: this task takes a plain workspace, and a tree is made
                # at its commit beside it for the next, once this task's refresh has brought the
                # commit to the engine-side mirror.
                source = layers.Source(
                    repo=repo,
                    sha=start.base_sha,
                    mirror_volume=volume,
                    refresh=refresh,
                )
                build = _in_context(
                    f"codexbot-tree-{task_id}",
                    _build_tree,
                    client,
                    redis,
                    source,
                    distance,
                    sandbox_args,
                    shape,
                    pool_settings,
                )
        box = pool.take(client, redis, taken_shape, task_id=task_id, settings=pool_settings)
        if box is not None:
            stack.callback(pool.release, redis, box.container_id)  # after the box is removed
            stack.push(box)
        elif tree is not None:
            box = _layered_sandbox(stack, client, tree, mounts, sandbox_args)
        if box is None:
            box = stack.enter_context(Sandbox(client, volumes=mounts, **sandbox_args))
        elapsed_ms["container_start"] = int((time.monotonic() - began) * 1000)
        began = time.monotonic()
        populate(box)
        elapsed_ms["workspace"] = int((time.monotonic() - began) * 1000)
        for thread in _behind(client, redis, taken_shape, pool_settings, task_id, build):
            thread.start()
            stack.callback(thread.join)  # waited for as the sandbox is removed
        yield box, prepared


def _behind(
    client: docker.DockerClient,
    redis: Redis,
    shape: pool.Shape,
    pool_settings: pool.PoolSettings,
    task_id: str,
    build: threading.Thread | None,
) -> list[threading.Thread]:
    """What starts once the task has its workspace: the tree's build, the pool's refill."""
    threads = [build] if build is not None else []
    if pool_settings.size > 0:
        threads.append(
            _in_context(
                f"codexbot-pool-{task_id}", pool.fill_quietly, client, redis, shape, pool_settings
            )
        )
    return threads


def _in_context(name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
    """A daemon thread running `target(*args)` in the task's context: what it starts is labelled
    with the task's RQ worker (whom the reaper watches), not with this work horse, which ends
    with the task."""
    run = contextvars.copy_context().run
    return threading.Thread(target=run, args=(target, *args), name=name, daemon=True)


def _layers_fit(prepared: Prepared, limits: SandboxLimits) -> bool:
    return (
        not prepared.key  # else setup made a workspace of its own, in the image
        and not limits.workspace_in_memory
        and not _layer_refusals.engine
        and prepared.image not in _layer_refusals.images
    )


def _build_tree(
    client: docker.DockerClient,
    redis: Redis,
    source: layers.Source,
    distance: Callable[[str, str], int],
    sandbox_args: dict[str, Any],
    shape: pool.Shape,
    pool_settings: pool.PoolSettings,
) -> None:
    """Make the repository's tree at `source.sha` unless one is near or being made, then an idle
    sandbox standing on it for the repository's next task; log failures."""
    try:
        tree = layers.ensure_tree(
            client,
            redis,
            source,
            image=sandbox_args["image"],
            distance=distance,
            task_id=sandbox_args["task_id"],
            limits=sandbox_args["limits"],
            wait=False,
        )
    except Exception as error:  # noqa: BLE001 - the task goes on with its plain workspace
        log.warning("sandbox.tree_failed", error=str(error), task_id=sandbox_args["task_id"])
        return
    if tree is not None:
        pool.fill_quietly(client, redis, dataclasses.replace(shape, tree=tree), pool_settings)


def _layered_sandbox(
    stack: ExitStack,
    client: docker.DockerClient,
    tree: layers.Tree,
    mounts: dict[str, dict[str, str]],
    sandbox_args: dict[str, Any],
) -> Sandbox | None:
    """The task's sandbox with /workspace layered on `tree`, or None to use a plain one."""
    layered = layers.task_layers(
        client, tree, task_id=sandbox_args["task_id"], labels=sandbox_args["labels"]
    )
    box = Sandbox(
        client,
        workspace_volume=False,
        volumes={**mounts, **layered.mounts},
        owned_volumes=layered.volumes,
        **sandbox_args,
    )
    try:
        box.start()
    except SandboxError as error:
        _layer_refusals.engine = True
        log.warning("sandbox.layers_unavailable", error=str(error), task_id=sandbox_args["task_id"])
        return None
    if box.run_raw("test -w .", timeout=30, workdir=WORKSPACE).exit_code != 0:
        # The image has no empty UPPER_MOUNT of the sandbox user's (a base image of the
        # repository's own), so /workspace kept the engine's root ownership.
        box.remove()
        _layer_refusals.images.add(sandbox_args["image"])
        log.warning(
            "sandbox.layers_unowned", image=sandbox_args["image"], task_id=sandbox_args["task_id"]
        )
        return None
    stack.push(box)
    return box
