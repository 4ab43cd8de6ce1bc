"""Prepared environments: the setup phase, run once per key and committed as an image.

    prepared = prepare_environment(
        client, redis, base_image="codexbot-sandbox:latest", spec=EnvSpec(...),
        repo="octo/widgets", task_id=task_id, secrets={"PRIVATE_INDEX_TOKEN": "..."},
        populate=lambda box: ...,  # put the workspace into the setup container
    )
    with Sandbox(client, image=prepared.image, ..., home_volume=True) as box: ...

The key is a hash of the base image id, the setup commands, `env` and the contents of the
lockfiles present (and the repository: the image holds its workspace, never to be shared).
Same key: the image is reused and setup does not run. A changed lockfile gives a new key, so a
rebuild. Concurrent tasks needing one key build it once (a Redis lock;
the others wait, then reuse).

Setup runs in a container with the same hardening as the agent's except a writable root and home
(what setup installs must be committed), network "none" (the operator may allow one; this
machine has none). Setup secrets reach setup commands only, through the exec server's per-command
environment: never the container's config, never argv. A secret is given only to the
repositories the operator lists for it (`CODEX_SETUP_SECRET_<NAME>_REPOS`). Before the commit,
every file setup changed is searched for each secret in every form a script trivially makes of it
(as is, base64, hex, reversed, URL-encoded); a hit fails setup, so a secret never lands in an
image. Whatever setup left untracked in the workspace (a .venv, node_modules, build output) is
listed in .git/info/exclude, so it never shows up in the agent's diff.

A failing command stops the task before the agent starts: `SetupFailed` carries the command, its
exit code and the tail of its output (secrets masked), for the comment on the issue.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import posixpath
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import docker
import docker.errors
import structlog
from redis import Redis

from codexbot import keys
from codexbot.redact import Redactor
from sandbox.container import Sandbox
from sandbox.hardening import WORKSPACE, SandboxLimits
from sandbox.labels import (
    CREATED_LABEL,
    KIND_LABEL,
    REPO_LABEL,
    TASK_LABEL,
    WORKER_LABEL,
    worker_identity,
)
from sandbox.output import SandboxError

log = structlog.get_logger(__name__)

LOCKFILE_PATTERNS = (
    "requirements*.txt",
    "poetry.lock",
    "uv.lock",
    "Pipfile.lock",
    "package-lock.json",
    "pnpm-lock.yaml",
    "yarn.lock",
    "go.sum",
    "Cargo.lock",
    "Gemfile.lock",
)
ENV_REPOSITORY = "codexbot-env"
KEY_LABEL = "codexbot.env-key"
BASE_LABEL = "codexbot.env-base"
SETUP_COMMAND_TIMEOUT = 900
LOCK_SECONDS = 3600
OUTPUT_TAIL_BYTES = 4000
MASK = "********"


class SetupFailed(Exception):
    """A setup command failed; the message is ready for the comment on the issue."""

    def __init__(self, command: str, exit_code: int, output_tail: str, reason: str = "") -> None:
        self.command = command
        self.exit_code = exit_code
        self.output_tail = output_tail
        self.reason = reason or f"exited with code {exit_code}"
        super().__init__(setup_failure_text(command, self.reason, output_tail))


def setup_failure_text(command: str, reason: str, output_tail: str) -> str:
    """The user-facing account of a failed setup: which command, why, and its output's end."""
    fence = "````" if "```" in output_tail else "```"
    tail = output_tail.rstrip("\n") or "(no output)"
    return (
        f"setup failed: `{command}` {reason}; the agent was not started.\n\n"
        f"Last lines of its output:\n\n{fence}\n{tail}\n{fence}"
    )


@dataclass(frozen=True)
class EnvSpec:
    """What the prepared image depends on: exactly the inputs of its key."""

    setup: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    lockfiles: tuple[tuple[str, bytes], ...] = ()  # (path, content), sorted by path

    @classmethod
    def build(
        cls, setup: tuple[str, ...], env: Mapping[str, str], lockfiles: Mapping[str, bytes]
    ) -> EnvSpec:
        return cls(tuple(setup), tuple(env.items()), tuple(sorted(lockfiles.items())))


@dataclass(frozen=True)
class Prepared:
    image: str
    key: str
    built: bool  # False: reused without running setup
    setup_ms: int = 0
    steps: tuple[dict, ...] = field(default=())


SECRET_ENV_PREFIX = "CODEX_SETUP_SECRET_"  # noqa: S105 - a name prefix, not a secret
REPOS_SUFFIX = "_REPOS"  # CODEX_SETUP_SECRET_<NAME>_REPOS: the repositories it is given to


class SetupSecretRefused(SetupFailed):
    """The repository names a setup secret the operator did not allow for it."""

    def __init__(self, name: str, repo: str) -> None:
        Exception.__init__(
            self,
            f"setup secret {name} is not allowed for {repo}; the operator lists the "
            f"repositories in {SECRET_ENV_PREFIX}{name}{REPOS_SUFFIX}",
        )
        self.command = "(setup secrets)"
        self.exit_code = 1
        self.output_tail = ""
        self.reason = str(self)


def secret_allowed(patterns: str, repo: str) -> bool:
    """Whether ``repo`` (owner/name) matches one of the comma-separated ``patterns``.

    Patterns are shell-style (`owner/*`) and case-insensitive, as GitHub's names are.
    """
    wanted = repo.lower()
    return any(
        fnmatch.fnmatchcase(wanted, pattern.strip().lower())
        for pattern in patterns.split(",")
        if pattern.strip()
    )


def setup_secret_values(
    names: tuple[str, ...] | list[str],
    environ: Mapping[str, str] | None = None,
    *,
    repo: str,
) -> dict[str, str]:
    """The values of the declared setup secrets, from the bot's own environment.

    `setup_secrets: [NPM_TOKEN]` in .github/codex.yml is looked up as CODEX_SETUP_SECRET_NPM_TOKEN;
    the repository names a secret, it cannot read an arbitrary variable of the bot's (its API key).
    Names the operator did not define are left out. A defined secret goes only to the
    repositories listed in CODEX_SETUP_SECRET_NPM_TOKEN_REPOS (none when that is not set):
    any other repository naming it is refused with `SetupSecretRefused`.
    """
    import os

    source = os.environ if environ is None else environ
    values = {}
    for name in names:
        if SECRET_ENV_PREFIX + name not in source:
            continue
        if not secret_allowed(source.get(SECRET_ENV_PREFIX + name + REPOS_SUFFIX, ""), repo):
            raise SetupSecretRefused(name, repo)
        values[name] = source[SECRET_ENV_PREFIX + name]
    return values


def is_lockfile(path: str) -> bool:
    name = posixpath.basename(path)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in LOCKFILE_PATTERNS)


def env_key(base_image_id: str, spec: EnvSpec, repo: str, scope: str = "") -> str:
    """sha256 over the base image id, the setup commands, env and the lockfiles' contents.

    And the repository: the image holds its workspace (checkout and what setup made there),
    so two repositories with the same setup must never share one. A `scope` (a fork's code)
    keeps less trusted code's images apart from the repository's own.
    """
    digest = hashlib.sha256()
    inputs: dict[str, object] = {
        "repo": repo,
        "base": base_image_id,
        "setup": spec.setup,
        "env": spec.env,
    }
    if scope:
        inputs["scope"] = scope
    digest.update(json.dumps(inputs).encode())
    for path, content in spec.lockfiles:
        digest.update(b"\0" + path.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


def image_name(key: str) -> str:
    return f"{ENV_REPOSITORY}:{key[:32]}"


def mask(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` with each secret masked in every form (as is, base64, hex, reversed ...)."""
    return Redactor(secrets.values(), mask=MASK)(text)


def _find_image(client: docker.DockerClient, name: str) -> docker.models.images.Image | None:
    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def touch(redis: Redis, key: str) -> None:
    redis.hset(keys.ENV_LAST_USED, key, str(int(time.time())))


def prepare_environment(
    client: docker.DockerClient,
    redis: Redis,
    *,
    base_image: str,
    spec: EnvSpec,
    repo: str,
    task_id: str,
    scope: str = "",
    secrets: Mapping[str, str] | None = None,
    populate: Callable[[Sandbox], None] | None = None,
    limits: SandboxLimits = SandboxLimits(),  # noqa: B008 - frozen dataclass
    volumes: dict[str, dict[str, str]] | None = None,
    command_timeout: float = SETUP_COMMAND_TIMEOUT,
) -> Prepared:
    """The prepared image for `spec` on `base_image`: reused when it exists, else built once."""
    base = _find_image(client, base_image)
    if base is None:
        raise SandboxError(f"sandbox image {base_image!r} not found")
    if not spec.setup:
        return Prepared(image=base_image, key="", built=False)
    key = env_key(str(base.id), spec, repo, scope)
    name = image_name(key)
    if _find_image(client, name) is not None:
        touch(redis, key)
        return Prepared(image=name, key=key, built=False)
    lock = redis.lock(
        keys.env_build_lock(key),
        timeout=LOCK_SECONDS,
        blocking_timeout=LOCK_SECONDS,
        thread_local=False,
    )
    if not lock.acquire():
        raise SandboxError(f"timed out waiting for another task to prepare {name}")
    try:
        if _find_image(client, name) is not None:  # built by whoever held the lock
            touch(redis, key)
            return Prepared(image=name, key=key, built=False)
        started = time.monotonic()
        steps = _run_setup(
            client,
            base_image=base_image,
            base_id=str(base.id),
            spec=spec,
            key=key,
            repo=repo,
            task_id=task_id,
            secrets=dict(secrets or {}),
            populate=populate,
            limits=limits,
            volumes=volumes,
            command_timeout=command_timeout,
        )
        touch(redis, key)
        return Prepared(
            image=name,
            key=key,
            built=True,
            setup_ms=int((time.monotonic() - started) * 1000),
            steps=tuple(steps),
        )
    finally:
        lock.release()


def _run_setup(
    client: docker.DockerClient,
    *,
    base_image: str,
    base_id: str,
    spec: EnvSpec,
    key: str,
    repo: str,
    task_id: str,
    secrets: dict[str, str],
    populate: Callable[[Sandbox], None] | None,
    limits: SandboxLimits,
    volumes: dict[str, dict[str, str]] | None,
    command_timeout: float,
) -> list[dict]:
    steps = []
    setup_task = f"{task_id}-setup"
    with Sandbox(
        client,
        image=base_image,
        task_id=setup_task,
        labels={REPO_LABEL: repo},
        env=dict(spec.env),
        volumes=volumes,
        limits=limits,
        workspace_volume=False,  # the workspace is part of the root filesystem: committed
        setup_phase=True,
    ) as box:
        if populate is not None:
            populate(box)
        for command in spec.setup:
            result = box.exec(command, timeout=command_timeout, max_output=64_000, env=secrets)
            steps.append(
                {"command": command, "exit_code": result.exit_code, "ms": result.duration_ms}
            )
            if result.exit_code != 0 or result.timed_out:
                tail = mask(result.output, secrets)[-OUTPUT_TAIL_BYTES:]
                reason = (
                    f"timed out after {command_timeout:g} s"
                    if result.timed_out
                    else f"exited with code {result.exit_code}"
                )
                log.warning("sandbox.setup_failed", command=command, exit_code=result.exit_code)
                raise SetupFailed(command, result.exit_code, tail, reason)
        _exclude_setup_leftovers(box)
        _refuse_stored_secrets(box, secrets)
        labels = {
            KEY_LABEL: key,
            BASE_LABEL: base_id,
            REPO_LABEL: repo,
            TASK_LABEL + "-built-by": task_id,
            KIND_LABEL: "env",
            CREATED_LABEL: datetime.now(UTC).isoformat(timespec="seconds"),
            WORKER_LABEL: worker_identity(),
        }
        repository, _, tag = image_name(key).partition(":")
        client.api.commit(
            box.container_id,
            repository=repository,
            tag=tag,
            message=f"codex-bot setup for {repo}",
            conf={"Labels": labels, "WorkingDir": WORKSPACE, "Cmd": ["sleep", "infinity"]},
        )
    log.info("sandbox.env_built", key=key, repo=repo, steps=len(steps))
    return steps


def _exclude_setup_leftovers(box: Sandbox) -> None:
    """Untracked files setup made in the workspace stay, but never appear in a diff."""
    box.run_raw(
        "test -d .git || exit 0; git ls-files --others --exclude-standard --directory -z "
        "| tr '\\0' '\\n' | sed 's|^|/|' >> .git/info/exclude",
        timeout=120,
        workdir=WORKSPACE,
    )


def _refuse_stored_secrets(box: Sandbox, secrets: dict[str, str]) -> None:
    """Fail if a secret is in any file setup changed, in any form: it would be in the image."""
    if not secrets:
        return
    changed = box.client.api.diff(box.container_id) or []
    roots = sorted(
        {
            entry["Path"]
            for entry in changed
            if entry.get("Kind") in (0, 1) and not entry["Path"].startswith(("/tmp", "/proc"))  # noqa: S108
        }
    )
    # Keep only top-most paths: grep -r covers what is below them.
    top: list[str] = []
    for path in roots:
        if not any(path.startswith(parent.rstrip("/") + "/") for parent in top):
            top.append(path)
    if not top:
        return
    listing = "\n".join(top)
    for name, value in secrets.items():
        # grep -F takes one pattern a line: every single-line form (a PEM's lines are forms).
        patterns = [form for form in Redactor([value]).forms() if len(form.splitlines()) == 1]
        if not patterns:
            continue
        reply = box.run_raw(
            f"printf '%s\\n' {_shell_words(listing)} "
            "| xargs -d '\\n' grep -rlsF -e \"$CODEXBOT_SECRET\" -- | head -5",
            timeout=300,
            workdir="/",
            env={"CODEXBOT_SECRET": "\n".join(patterns)},
        )
        found = reply.data().decode(errors="replace").strip()
        if found:
            files = ", ".join(found.splitlines())
            raise SetupFailed(
                "(after the setup commands)",
                1,
                f"the value of setup secret {name} was left in: {files} (searched for as is, "
                "in base64, hex, reversed and URL-encoded)",
                reason=(
                    "left a setup secret in a file that would be kept in the prepared image; "
                    "setup secrets may be used during setup but not stored"
                ),
            )


def _shell_words(text: str) -> str:
    return " ".join(shlex.quote(line) for line in text.splitlines())
