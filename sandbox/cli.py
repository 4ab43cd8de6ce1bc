"""`codexbot sandbox ...`: build, list and prune the prepared environments.

    codexbot sandbox build --repo OWNER/NAME [--installation-id N | --git-url URL]
    codexbot sandbox ls
    codexbot sandbox prune --older-than 7d --max-total 20GB

`prune` removes prepared images not used for longer than `--older-than`, then the least recently
used ones until all of them together fit in `--max-total`. Images a container still uses stay.
It also removes the repositories' workspace trees that newer ones superseded (`sandbox.layers`);
the reaper does that on its own too.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime

import click
import docker
import docker.errors
from redis import Redis

from codexbot import keys
from sandbox.labels import CREATED_LABEL, KIND_LABEL, REPO_LABEL
from sandbox.layers import prune_trees
from sandbox.prepared import KEY_LABEL

UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "K": 10**3, "M": 10**6})
UNITS.update({"G": 10**9, "T": 10**12})
DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """'20GB' -> 20_000_000_000; '512MiB' -> 536870912.

    >>> parse_size("1.5GB")
    1500000000
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in UNITS:
        raise click.BadParameter(f"{text!r} is not a size like 20GB or 512MiB")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def parse_duration(text: str) -> int:
    """'7d' -> 604800 seconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 7d, 12h or 30m")
    return int(match.group(1)) * DURATIONS[match.group(2)]


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1000  # type: ignore[assignment]
    return f"{size:.1f}TB"


@dataclass(frozen=True)
class EnvImage:
    id: str
    key: str
    repo: str
    size: int
    created: float
    last_used: float
    tags: tuple[str, ...]


def plan_prune(
    images: list[EnvImage], *, now: float, older_than: int, max_total: int
) -> list[tuple[EnvImage, str]]:
    """Which images to remove, and why: stale ones first, then least recently used over budget."""
    doomed: list[tuple[EnvImage, str]] = []
    kept = []
    for image in images:
        if now - image.last_used > older_than:
            doomed.append((image, f"unused for {int((now - image.last_used) // 86400)} days"))
        else:
            kept.append(image)
    total = sum(image.size for image in kept)
    for image in sorted(kept, key=lambda i: i.last_used):
        if total <= max_total:
            break
        doomed.append((image, "least recently used while over the size budget"))
        total -= image.size
    return doomed


def _timestamp(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def env_images(client: docker.DockerClient, redis: object) -> list[EnvImage]:
    used = {
        (k.decode() if isinstance(k, bytes) else k): float(v)
        for k, v in (redis.hgetall(keys.ENV_LAST_USED) or {}).items()  # type: ignore[attr-defined]
    }
    images = []
    for image in client.images.list(filters={"label": f"{KIND_LABEL}=env"}):
        labels = image.labels
        key = labels.get(KEY_LABEL, "")
        created = _timestamp(labels.get(CREATED_LABEL, ""))
        images.append(
            EnvImage(
                id=image.id,
                key=key,
                repo=labels.get(REPO_LABEL, ""),
                size=int(image.attrs.get("Size", 0)),
                created=created,
                last_used=used.get(key, created),
                tags=tuple(image.tags),
            )
        )
    return images


def _redis() -> Redis:
    from codexbot.settings import load_settings

    return Redis.from_url(load_settings().redis_url)


@click.group("sandbox")
def sandbox() -> None:
    """Prepared sandbox environments (one image per setup key)."""


@sandbox.command("ls")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def list_environments(as_json: bool) -> None:
    """List prepared environments: key, repository, size, last used."""
    client = docker.from_env()
    images = sorted(env_images(client, _redis()), key=lambda i: -i.last_used)
    if as_json:
        for image in images:
            click.echo(json.dumps({**image.__dict__, "tags": list(image.tags)}))
        return
    click.echo(f"{'KEY':<16} {'REPOSITORY':<40} {'SIZE':>9}  LAST USED")
    for image in images:
        used = datetime.fromtimestamp(image.last_used).isoformat(timespec="minutes")
        click.echo(f"{image.key[:16]:<16} {image.repo:<40} {human_size(image.size):>9}  {used}")


@sandbox.command("prune")
@click.option("--older-than", default="7d", show_default=True, help="unused for longer than this")
@click.option("--max-total", default="20GB", show_default=True, help="size budget for all of them")
@click.option("--dry-run", is_flag=True, help="say what would go, remove nothing")
def prune(older_than: str, max_total: str, dry_run: bool) -> None:
    """Remove stale prepared environments, then the least recently used over the budget."""
    client = docker.from_env()
    redis = _redis()
    plan = plan_prune(
        env_images(client, redis),
        now=time.time(),
        older_than=parse_duration(older_than),
        max_total=parse_size(max_total),
    )
    for image, reason in plan:
        if dry_run:
            click.echo(f"would remove {image.key[:16]} ({image.repo}): {reason}")
            continue
        try:
            client.images.remove(image.id, force=False)
        except docker.errors.APIError as error:
            click.echo(f"kept {image.key[:16]} ({image.repo}): {error.explanation or error}")
            continue
        redis.hdel(keys.ENV_LAST_USED, image.key)
        click.echo(f"removed {image.key[:16]} ({image.repo}, {human_size(image.size)}): {reason}")
    if not dry_run:
        trees = prune_trees(client, redis)
        click.echo(f"removed {trees} superseded workspace tree(s)")


@sandbox.command("build")
@click.option("--repo", "full_name", required=True, help="OWNER/NAME")
@click.option("--installation-id", type=int, help="the App's installation on that repository")
@click.option("--git-url", help="clone from here instead of GitHub (a path or URL; no token)")
@click.option("--branch", help="the branch whose setup to prepare (default: the default branch)")
def build(
    full_name: str, installation_id: int | None, git_url: str | None, branch: str | None
) -> None:
    """Run a repository's setup now, so its first task starts warm."""
    # The one place the sandbox package reaches up into the workers' code: it is a CLI entry.
    from codexbot.settings import load_settings
    from sandbox.prepared import SetupFailed, setup_secret_values
    from workers import repoconfig
    from workers.workspace import MirrorCache, task_sandbox

    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", full_name):
        raise click.BadParameter("expected OWNER/NAME", param_hint="--repo")
    settings = load_settings()
    token = None
    if git_url is None:
        if installation_id is None:
            raise click.UsageError("give --installation-id (or --git-url for a local copy)")
        from workers.github import git_base_url
        from workers.githubapp import GitHubApp

        app = GitHubApp(
            app_id=settings.github_app_id,
            private_key=settings.private_key_pem(),
            api_url=settings.github_api_url,
        )
        token = app.installation_token(installation_id)
        git_url = f"{git_base_url(settings.github_api_url)}/{full_name}.git"
    cache = MirrorCache(settings.codex_data_dir / "mirrors")
    mirror = cache.update(full_name, git_url, token=token)
    workdir = settings.codex_data_dir / "work" / f"build-{int(time.time())}"
    start = cache.checkout(mirror, workdir / "repo", git_url=git_url, branch=branch)
    try:
        config = repoconfig.load(start.path)
        client = docker.from_env()
        timings: dict[str, int] = {}
        with task_sandbox(
            client,
            _redis(),
            base_image=settings.codex_sandbox_image,
            config=config,
            start=start,
            host_mirror=mirror,
            repo=full_name,
            task_id=f"build-{re.sub(r'[^A-Za-z0-9]+', '-', full_name)}-{int(time.time())}",
            setup_secrets=setup_secret_values(config.setup_secrets, repo=full_name),
            timings=timings,
        ) as (_, prepared):
            pass
    except (repoconfig.RepoConfigError, SetupFailed) as error:
        raise click.ClickException(str(error)) from None
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    if not prepared.key:
        click.echo(f"{full_name} declares no setup: tasks use {settings.codex_sandbox_image}")
    else:
        state = "built" if prepared.built else "already prepared"
        click.echo(f"{prepared.image} {state} for {full_name} (setup {timings['setup']} ms)")
