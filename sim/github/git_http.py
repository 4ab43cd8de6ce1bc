"""Git on disk: bare repositories, reading history, and the bridge to ``git http-backend``."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from sim.github.payloads import CommitInfo

GIT_TIMEOUT_SECONDS = 60
SIM_IDENTITY = {
    "GIT_AUTHOR_NAME": "octo-maintainer",
    "GIT_AUTHOR_EMAIL": "octo-maintainer@users.noreply.github.local",
    "GIT_COMMITTER_NAME": "octo-maintainer",
    "GIT_COMMITTER_EMAIL": "octo-maintainer@users.noreply.github.local",
}
LOG_FIELDS = ("%H", "%T", "%P", "%an", "%ae", "%aI", "%cn", "%ce", "%cI", "%B")
RECORD_END = "\x1e"
FIELD_END = "\x1f"
ZERO_SHA = "0" * 40
# Never import local build and cache debris as repository content.
IMPORT_EXCLUDES = (
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".venv/",
    ".mypy_cache/",
    ".ruff_cache/",
)


class GitError(RuntimeError):
    pass


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment: no user or system config leaks into the simulator's git."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": tempfile.gettempdir(),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    env.update(extra or {})
    return env


def run_git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=git_env(env),
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise GitError(f"git {args[0]} failed ({result.returncode}): {result.stderr.strip()[:500]}")
    return result.stdout


def init_bare(path: Path, default_branch: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    run_git("init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path))
    configure_bare(path)


def configure_bare(path: Path) -> None:
    """Serve over smart HTTP like GitHub: no force pushes, no deletes, no pushes to PR refs.

    Appended to the config file in one write: a ``git config`` process per key costs more
    than the rest of creating a repository."""
    settings = (
        "[receive]\n"
        "\tdenyNonFastForwards = true\n"
        "\tdenyDeletes = true\n"
        # refs/pull/N/head is GitHub's, read-only to every pusher.
        "\thideRefs = refs/pull\n"
        "[http]\n"
        "\treceivepack = true\n"
        "\tuploadpack = true\n"
        "[uploadpack]\n"
        "\tallowReachableSHA1InWant = true\n"
    )
    with (path / "config").open("a", encoding="utf-8") as config:
        config.write(settings)


def import_directory(bare: Path, source: Path, branch: str) -> None:
    """Make ``source`` the content of ``branch``: push its history, or commit a plain directory
    (minus ``IMPORT_EXCLUDES``) as one "Initial commit"."""
    source = source.resolve()
    if (source / ".git").exists():
        run_git("push", "--quiet", str(bare), f"HEAD:refs/heads/{branch}", cwd=source)
        return
    with tempfile.TemporaryDirectory(prefix="sim-import-") as scratch:
        env = {**SIM_IDENTITY, "GIT_DIR": scratch, "GIT_WORK_TREE": str(source)}
        run_git("init", "--quiet", f"--initial-branch={branch}", env={"GIT_DIR": scratch})
        (Path(scratch) / "info").mkdir(exist_ok=True)
        (Path(scratch) / "info" / "exclude").write_text("\n".join(IMPORT_EXCLUDES) + "\n")
        run_git("add", "--all", ".", cwd=source, env=env)
        run_git("commit", "--quiet", "--no-verify", "-m", "Initial commit", cwd=source, env=env)
        run_git("push", "--quiet", str(bare), f"HEAD:refs/heads/{branch}", cwd=source, env=env)


def clone_bare(source: Path, target: Path) -> None:
    """A fork: a new bare repository holding every branch and tag of ``source``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    run_git("clone", "--quiet", "--bare", "--no-local", str(source), str(target))
    run_git("remote", "remove", "origin", cwd=target)


def fetch_ref(bare: Path, source: Path, source_ref: str, target_ref: str) -> None:
    """Copy ``source_ref`` of the repository at ``source`` into ``target_ref`` of ``bare``."""
    run_git("fetch", "--quiet", "--no-tags", str(source), f"+{source_ref}:{target_ref}", cwd=bare)


def update_ref(bare: Path, ref: str, new_sha: str, old_sha: str | None = None) -> None:
    """Move ``ref`` to ``new_sha``; with ``old_sha``, only if it still points there."""
    run_git("update-ref", ref, new_sha, *([old_sha] if old_sha else []), cwd=bare)


def delete_ref(bare: Path, ref: str) -> None:
    run_git("update-ref", "-d", ref, cwd=bare)


def commit_files(
    bare: Path,
    parent: str,
    files: dict[str, str | None],
    message: str,
    *,
    author_name: str,
    author_email: str,
) -> str:
    """A new commit on top of ``parent`` with ``files`` written (``None`` deletes); its sha.

    Written straight into the bare repository through a scratch index: no work tree.
    """
    with tempfile.TemporaryDirectory(prefix="sim-commit-") as scratch:
        # update-index wants a work tree; an empty scratch one is never read with --cacheinfo.
        (Path(scratch) / "tree").mkdir()
        env = {
            "GIT_DIR": str(bare),
            "GIT_WORK_TREE": str(Path(scratch) / "tree"),
            "GIT_INDEX_FILE": str(Path(scratch) / "index"),
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        }
        run_git("read-tree", parent, cwd=bare, env=env)
        for path, text in files.items():
            if text is None:
                run_git("update-index", "--force-remove", "--", path, cwd=bare, env=env)
                continue
            blob = Path(scratch) / "blob"
            blob.write_text(text, encoding="utf-8")
            sha = run_git("hash-object", "-w", "--", str(blob), cwd=bare, env=env).strip()
            run_git(
                "update-index", "--add", "--cacheinfo", f"100644,{sha},{path}", cwd=bare, env=env
            )
        tree = run_git("write-tree", cwd=bare, env=env).strip()
        return run_git("commit-tree", tree, "-p", parent, "-m", message, cwd=bare, env=env).strip()


def file_diff(bare: Path, base: str, head: str, path: str) -> str:
    """The pull-request diff of one file: from the merge base of ``base`` and ``head``."""
    return run_git(
        "diff", "--no-color", "--no-ext-diff", "-U3", f"{base}...{head}", "--", path, cwd=bare
    )


def changed_files(bare: Path, base: str, head: str) -> list[str]:
    return run_git("diff", "--name-only", f"{base}...{head}", cwd=bare).split()


def ref_sha(bare: Path, ref: str) -> str | None:
    result = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        cwd=bare,
        env=git_env(),
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def list_refs(bare: Path) -> dict[str, str]:
    output = run_git("for-each-ref", "--format=%(refname) %(objectname)", cwd=bare)
    refs = {}
    for line in output.splitlines():
        name, _, sha = line.partition(" ")
        refs[name] = sha
    return refs


def changed_refs(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str, str]]:
    """(ref, old sha, new sha) for every ref a push created, moved or deleted."""
    names = sorted(set(before) | set(after))
    return [
        (name, before.get(name, ZERO_SHA), after.get(name, ZERO_SHA))
        for name in names
        if before.get(name) != after.get(name)
    ]


def parse_log(output: str) -> list[CommitInfo]:
    commits = []
    for record in output.split(RECORD_END):
        record = record.strip("\n")
        if not record:
            continue
        sha, tree, parents, an, ae, ad, cn, ce, cd, message = record.split(FIELD_END)
        commits.append(
            CommitInfo(
                sha=sha,
                tree=tree,
                parents=tuple(parents.split()),
                author_name=an,
                author_email=ae,
                author_date=to_utc_z(ad),
                committer_name=cn,
                committer_email=ce,
                committer_date=to_utc_z(cd),
                message=message.rstrip("\n"),
            )
        )
    return commits


def to_utc_z(iso_date: str) -> str:
    return datetime.fromisoformat(iso_date).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log(
    bare: Path, revision_range: str, *, max_count: int | None = None, skip: int = 0
) -> list[CommitInfo]:
    """Commits in ``revision_range``, newest first (``git log`` order)."""
    args = ["log", f"--format={FIELD_END.join(LOG_FIELDS)}{RECORD_END}", f"--skip={skip}"]
    if max_count is not None:
        args.append(f"--max-count={max_count}")
    return parse_log(run_git(*args, revision_range, "--", cwd=bare))


def count_commits(bare: Path, revision_range: str) -> int:
    return int(run_git("rev-list", "--count", revision_range, cwd=bare).strip() or 0)


# ---- smart HTTP -------------------------------------------------------------------------------


@dataclass
class CgiResponse:
    status: int
    headers: list[tuple[str, str]]
    body: Iterator[bytes]


def http_backend_env(
    project_root: Path,
    *,
    path_info: str,
    method: str,
    query: str,
    content_type: str,
    content_encoding: str,
    remote_user: str,
    remote_addr: str,
    git_protocol: str,
) -> dict[str, str]:
    env = git_env(
        {
            "GIT_PROJECT_ROOT": str(project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path_info,
            "REQUEST_METHOD": method,
            "QUERY_STRING": query,
            "CONTENT_TYPE": content_type,
            "REMOTE_ADDR": remote_addr,
            "GATEWAY_INTERFACE": "CGI/1.1",
        }
    )
    if remote_user:
        env["REMOTE_USER"] = remote_user
    if content_encoding:
        # http-backend inflates gzip request bodies itself when told about them.
        env["HTTP_CONTENT_ENCODING"] = content_encoding
    if git_protocol:
        env["GIT_PROTOCOL"] = git_protocol
    return env


def run_http_backend(env: dict[str, str], body: IO[bytes], body_length: int) -> CgiResponse:
    """Run ``git http-backend`` as CGI; stream its stdout back after parsing the CGI headers."""
    env = {**env, "CONTENT_LENGTH": str(body_length)}
    process = subprocess.Popen(
        ["git", "http-backend"],
        stdin=body,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    stdout = process.stdout
    assert stdout is not None
    status, headers = parse_cgi_headers(stdout)

    def stream() -> Iterator[bytes]:
        try:
            while chunk := stdout.read(65536):
                yield chunk
        finally:
            stdout.close()
            try:
                process.wait(timeout=GIT_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    return CgiResponse(status=status, headers=headers, body=stream())


def parse_cgi_headers(stream: IO[bytes]) -> tuple[int, list[tuple[str, str]]]:
    status = 200
    headers: list[tuple[str, str]] = []
    for raw in iter(stream.readline, b""):
        line = raw.decode("latin-1").rstrip("\r\n")
        if not line:
            break
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers.append((name.strip(), value.strip()))
    return status, headers


def blob_at(bare: Path, ref: str, path: str) -> tuple[str, bytes] | None:
    """(blob sha, bytes) of the regular file at ``path`` in ``ref``; None if there is none."""
    spec = f"{ref}:{path.strip('/')}"
    try:
        if run_git("cat-file", "-t", spec, cwd=bare).strip() != "blob":
            return None
        sha = run_git("rev-parse", spec, cwd=bare).strip()
    except GitError:
        return None
    data = subprocess.run(
        ["git", "cat-file", "blob", sha],
        cwd=bare,
        env=git_env(),
        capture_output=True,
        timeout=GIT_TIMEOUT_SECONDS,
        check=True,
    ).stdout
    return sha, data
