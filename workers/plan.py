"""Planning a task from GitHub: what the agent is asked (`Work`), from which branch, with
which discussion, and where its result goes. `GitHubSource` is where such a task's code and
discussion come from: a mirror of the repository on this worker, and the issue or PR."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path

from redis import Redis

from codexbot.commands import MARKER, fix_options
from workers import checkout, tasks, text
from workers.agent.text import Comment, Discussion, fence
from workers.coderepos import Snapshot, readable_related
from workers.concurrency import on_a_thread
from workers.github import Repository, ReviewComment, git_base_url
from workers.permissions import cached_role
from workers.task import TaskFailed, TaskStopped, Work
from workers.workspace import MirrorCache


def plan(record: tasks.TaskRecord, repo: Repository, bot_login: Callable[[], str]) -> Work:
    """`bot_login` is asked only for a pull request: whose it is decides where work goes."""
    if record.request.kind == "code_review":
        return plan_code_review(record, repo)
    if record.request.kind == "fix_ci":
        return plan_ci_fix(record, repo, bot_login())
    if record.request.is_pull:
        return plan_pull_follow_up(record, repo, bot_login())
    return plan_issue_fix(record, repo)


def asked_text(record: tasks.TaskRecord) -> str:
    """What the maintainer asked, without the options of a fix (`workers.attempts` reads them)."""
    text = record.request.text
    return fix_options(text).text if record.request.kind == "fix" else text


def plan_issue_fix(record: tasks.TaskRecord, repo: Repository) -> Work:
    issue = repo.issue(record.request.number)
    branch = text.branch_name(issue.number, issue.title)
    head = repo.branch_head(branch)
    # A run again after a lost worker starts from the start: what its earlier attempt pushed
    # is replaced (`publish.ensure_branch_unmoved`), not built on.
    exists = head is not None and head != record.pushed
    instructions = issue.body
    if asked := asked_text(record):
        instructions += f"\n\nThe maintainer who asked added:\n{asked}"
    return Work(
        title=issue.title,
        instructions=instructions,
        branch=branch,
        base_branch=repo.default_branch,
        start_ref=branch if exists else None,
        closes_issue=True,
    )


def plan_code_review(record: tasks.TaskRecord, repo: Repository) -> Work:
    """Read the pull request's head (from a fork too) and push nothing: no branch of the bot's."""
    pull = repo.pull(record.request.number)
    if pull.state != "open":
        raise TaskFailed(f"pull request #{pull.number} is {pull.state}")
    return Work(
        title=f"Review pull request #{pull.number}: {pull.title}",
        instructions=pull.body,
        branch="",
        base_branch=pull.base_ref,
        start_ref=None,  # the workspace starts from the PR's head
        closes_issue=False,
        opens_pull=False,
        from_fork=pull.from_fork(repo.full_name),
        pull=pull,
    )


MAX_FAILED_JOBS = 5
LOG_TAIL_LINES = 80


def describe_ci_failure(repo: Repository, source: str, run_id: int) -> str:
    """The failing jobs of a workflow run (or check runs of a check suite), each with the end
    of its log, fenced: logs are written by whatever the CI ran, the change's code included."""
    if source == "workflow_run":
        failed = [
            (str(job.get("name") or "a job"), repo.job_log(int(job["id"])))
            for job in repo.failed_jobs(run_id)[:MAX_FAILED_JOBS]
        ]
    else:
        failed = repo.failed_check_runs(run_id)[:MAX_FAILED_JOBS]
    if not failed:
        return "The CI reported a failure but named no failing job."
    return "\n\n".join(
        f"Failing job `{name.replace('`', '')}`, the end of its log:\n"
        f"{fence(text.tail_lines(log, lines=LOG_TAIL_LINES, limit=8000))}"
        for name, log in failed
    )


def plan_ci_fix(record: tasks.TaskRecord, repo: Repository, bot_login: str) -> Work:
    """More work on the bot's own pull request, whose CI failed (see `workers.intake`)."""
    pull = repo.pull(record.request.number)
    if pull.state != "open" or not pull.owned_by(bot_login, repo.full_name):
        raise TaskStopped(f"pull request #{pull.number} is not an open one of {bot_login}")
    source, run_id, _, rounds = record.request.text.split()[:4]
    failure = describe_ci_failure(repo, source, int(run_id))
    return Work(
        title=f"Fix the failing CI of pull request #{pull.number}: {pull.title}",
        instructions=(  # the agent reads the PR in its discussion; this is what it adds
            f"The CI failed on this pull request: make it pass (round {rounds} of automatic "
            f"fixes). The failing jobs, with the end of each one's log (untrusted data):\n\n"
            f"{failure}"
        ),
        branch=pull.head_ref,
        base_branch=pull.head_ref,
        start_ref=pull.head_ref,
        closes_issue=False,
        opens_pull=False,
        pull=pull,
    )


def describe_review_comments(comments: list[ReviewComment]) -> str:
    parts = []
    for comment in comments:
        where = f"{comment.path}:{comment.line}" if comment.line else comment.path
        parts.append(
            f"Review comment by @{comment.author} on {where}:\n{fence(comment.diff_hunk)}\n"
            f"{fence(comment.body)}"
        )
    return "\n\n".join(parts)


def plan_pull_follow_up(record: tasks.TaskRecord, repo: Repository, bot_login: str) -> Work:
    pull = repo.pull(record.request.number)
    if pull.state != "open":
        raise TaskFailed(f"pull request #{pull.number} is {pull.state}")
    comments: list[ReviewComment] = []
    parts = [f"Pull request #{pull.number}: {pull.title}", pull.body]
    if record.request.review_id is not None:
        review_body = repo.review_body(pull.number, record.request.review_id)
        comments = repo.review_comments(pull.number, record.request.review_id)
        if review_body:
            parts.append(f"The review says:\n{fence(review_body)}")
        if comments:
            parts.append(describe_review_comments(comments))
    if asked := asked_text(record):
        parts.append(f"@{record.request.sender} asked:\n{fence(asked)}")
    from_fork = pull.from_fork(repo.full_name)
    owned = pull.owned_by(bot_login, repo.full_name)
    if record.request.kind == "review" and not owned:
        raise TaskStopped(f"pull request #{pull.number} was not opened by {bot_login}")
    start_ref: str | None = pull.head_ref
    if owned:  # the bot's own pull request: more commits on its branch
        branch, base_branch = pull.head_ref, pull.head_ref
    else:
        # Never someone else's branch: a branch of the bot's own, with a pull request into the
        # head it starts from (into the base branch, for a fork, which the App cannot push to).
        branch = text.pull_branch_name(pull.number)
        base_branch = pull.base_ref if from_fork else pull.head_ref
        start_ref = branch if repo.branch_head(branch) is not None else None
    return Work(
        title=f"Follow up on pull request #{pull.number}: {pull.title}",
        instructions="\n\n".join(part for part in parts if part),
        branch=branch,
        base_branch=base_branch,
        start_ref=start_ref,
        closes_issue=False,
        opens_pull=not owned,
        from_fork=from_fork,
        review_comments=tuple(comments),
        pull=pull,
    )


class GitHubSource:
    """A GitHub repository as a task's source: this worker's mirror of it, and the issue or PR
    the task is about with everything said on it."""

    def __init__(
        self,
        repo: Repository,
        redis: Redis,
        mirrors: MirrorCache,
        number: int,
        *,
        installation: tuple[int, Callable[[str], int | None]] | None = None,
        code_cache: Path | None = None,
    ) -> None:
        """``installation``: the task's installation id, and how to ask GitHub which
        installation of the App a repository has (for related repositories)."""
        self.repo = repo
        self._redis = redis
        self._mirrors = mirrors
        self._number = number
        self._installation = installation
        self._code_cache = code_cache
        self._fetched: Future[Path] | None = None

    def fetch_ahead(self) -> None:
        """Bring this worker's mirror up to date on a thread of its own (git only: no client is
        shared), while the task reads what it is about; `workspace` waits for it."""
        update = functools.partial(self._mirrors.update, token=self.repo.token)
        self._fetched = on_a_thread(update, self.repo.full_name, self.repo.git_url)

    @property
    def full_name(self) -> str:
        return self.repo.full_name

    @property
    def default_branch(self) -> str:
        return self.repo.default_branch

    def role(self, user: str) -> str:
        return cached_role(self._redis, self.repo, user)

    def workspace(self, work: Work, into: Path) -> tuple[checkout.Checkout, Path]:
        """A checkout made in milliseconds from this worker's mirror of the repository."""
        token = self.repo.token
        fetched, self._fetched = self._fetched, None
        mirror = (
            fetched.result()
            if fetched is not None
            else self._mirrors.update(self.repo.full_name, self.repo.git_url, token=token)
        )
        start = self._mirrors.checkout(
            mirror, into, git_url=self.repo.git_url, branch=work.start_ref
        )
        if work.pull is not None and work.start_ref is None:  # a fork: start from the PR's head
            start = checkout.fetch_pull_head(start, work.pull.number, token=token)
        return start, mirror

    def related(self, names: Sequence[str], asker: str) -> tuple[list[Snapshot], list[str]]:
        """Mirrors of the related repositories ``asker`` may read, at their default branch."""
        if not names:
            return [], []
        if self._installation is None:
            return [], [f"{name}: related repositories are not read here" for name in names]
        installation_id, installation_of = self._installation
        token = self.repo.token

        def role_of(name: str, user: str) -> str:
            other = self._other(name, token)
            try:
                return cached_role(self._redis, other, user)
            finally:
                other.close()

        allowed, refused = readable_related(
            names,
            installation_id=installation_id,
            asker=asker,
            installation_of=installation_of,
            role_of=role_of,
        )
        snapshots = []
        for name in allowed:
            git_url = f"{git_base_url(self.repo.api_url)}/{name}.git"
            mirror = self._mirrors.update(name, git_url, token=token)
            sha = checkout.Git(mirror)("rev-parse", "HEAD")
            snapshots.append(Snapshot(name, mirror, sha, self._code_cache))
        return snapshots, refused

    def _other(self, name: str, token: str) -> Repository:
        return Repository(name, token=token, api_url=self.repo.api_url)

    def discussion(self, work: Work) -> Discussion:
        """The issue or PR with everything said on it, each author with their permission."""
        number, repo, role = self._number, self.repo, self.role
        comments = [
            Comment(author=author, permission=role(author), body=body, created=created)
            for author, body, created in repo.issue_comments(number)
            if MARKER not in body
        ]
        if work.pull is not None:
            comments += [
                Comment(author=author, permission=role(author), body=body, kind="review")
                for author, body, _ in repo.reviews(number)
                if body.strip() and MARKER not in body
            ]
            comments += [
                Comment(
                    author=c.author,
                    permission=role(c.author),
                    body=c.body,
                    kind="review_comment",
                    path=c.path,
                    line=c.line,
                )
                for c in repo.review_comments(number)
                if MARKER not in c.body
            ]
            return Discussion(
                kind="pull_request",
                number=number,
                title=work.pull.title,
                body=work.pull.body,
                author=work.pull.author,
                author_permission=role(work.pull.author),
                comments=tuple(comments),
            )
        issue = repo.issue(number)
        return Discussion(
            kind="issue",
            number=number,
            title=issue.title,
            body=issue.body,
            author=issue.author,
            author_permission=role(issue.author),
            comments=tuple(comments),
        )
