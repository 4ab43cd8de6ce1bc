"""Publishing a task's change: the checks before a push, the commit message, and the two
publishers. `GitHubPublisher` pushes the bot's branch and opens or follows up a pull request;
`workers.local.LocalPublisher` leaves a branch in a local checkout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import structlog

from codexbot.settings import Settings
from sandbox.changes import ChangePolicy, Refusal
from workers import checkout, review, tasks, text
from workers.agent.loop import AgentResult
from workers.agentbox import TestOutcome
from workers.concurrency import alongside, on_a_thread
from workers.github import GitHubError, Repository
from workers.policy import pull_request_template
from workers.task import Task, TaskFailed, TaskStopped, Work
from workers.testcmd import compare_runs

log = structlog.get_logger()
T = TypeVar("T")


@dataclass(frozen=True)
class Pushed:
    sha: str
    message: str
    changed: list[str]


class Publisher(Protocol):
    """Where a task's change goes: `push` commits it (while the tests run on it), `publish`
    makes it known and returns what the task reports."""

    def push(
        self,
        task: Task,
        work: Work,
        start: checkout.Checkout,
        patch: bytes,
        result: AgentResult,
        policy: ChangePolicy,
        ahead: checkout.AppliedPatch | None = None,
    ) -> Pushed: ...

    def publish(
        self,
        task: Task,
        work: Work,
        pushed: Pushed,
        result: AgentResult,
        tests: tuple[TestOutcome, TestOutcome],
        refusals: tuple[Refusal, ...] = (),
        ran_into: tuple[str, ...] = (),
        tries: str = "",
    ) -> dict: ...

    def review(
        self, task: Task, work: Work, result: AgentResult, diff: str, start: checkout.Checkout
    ) -> dict:
        """A code review's findings made known; nothing is pushed."""
        ...


def ensure_no_known_secret(task: Task, patch: bytes) -> None:
    if kinds := task.redact.found(patch):
        raise TaskFailed(
            f"the change holds a secret the bot knows ({', '.join(kinds)}); nothing was pushed"
        )


def commit_message_for(
    task: Task,
    work: Work,
    start: checkout.Checkout,
    result: AgentResult,
    changed: list[str],
    co_author: str | None = None,
) -> str:
    return text.commit_message(
        result.title or f"Fix {work.title}",
        result.summary,
        task.record.request.number if work.closes_issue else None,
        conventions=text.learn_conventions(checkout.recent_subjects(start)),
        component=text.component_for(changed),
        co_author=co_author,
    )


def ensure_still_newest(task: Task) -> None:
    newest = tasks.newest_for_target(
        task.redis, task.record.request.repo, task.record.request.number
    )
    if newest not in (None, task.id):
        raise TaskStopped(f"superseded by task `{newest}`")


def ensure_owner(task: Task) -> None:
    """A stale attempt (its worker was taken for lost; the task runs again elsewhere) publishes
    nothing: checked in Redis right before the push and before the pull request."""
    if not tasks.owns(task.redis, task.id, task.record.attempt):
        raise tasks.NotOwner(f"attempt {task.record.attempt} of task {task.id} was taken over")


def ensure_branch_unmoved(
    repo: Repository, work: Work, start: checkout.Checkout, earlier: str = ""
) -> str:
    """Never push over a human: the branch must still be where this task started from, or where
    an earlier attempt of this task pushed it (returned: the push replaces that commit)."""
    head = repo.branch_head(work.branch)
    expected = start.base_sha if work.start_ref else None
    if earlier and head == earlier:
        return earlier
    if head != expected:
        raise TaskStopped(
            f"`{work.branch}` moved while I worked (now at {str(head)[:12]}); "
            "I did not push over it. Ask again to start from the new head."
        )
    return ""


def ensure_push_target(repo: Repository, work: Work) -> None:
    """The bot pushes only to branches of its own: never the default or a protected branch."""
    branch = work.branch
    if (
        not branch.startswith(text.BRANCH_PREFIX)
        or branch == repo.default_branch
        or repo.branch_protected(branch)
    ):
        raise TaskFailed(
            f"`{branch}` is not a branch codex-bot created (or it is protected), so I did not "
            "push to it"
        )


def ensure_fork_branch_allowed(start: checkout.Checkout, work: Work, policy: ChangePolicy) -> None:
    """A fork's branch pushed here is judged whole against the base branch: a workflow or a
    protected path that came with the fork would land in this repository, where workflows run
    with its secrets. Workflow changes from a fork are refused whatever the config allows."""
    base = checkout.merge_base(start, work.base_branch)
    strict = dataclasses.replace(policy, allow_workflow_changes=False)
    refusals = checkout.judge_staged(start.path, base, strict)
    if refusals:
        listed = "; ".join(
            f"{text.code_span(refusal.path)}: {refusal.reason}" for refusal in refusals[:10]
        )
        raise TaskFailed(
            f"the branch would bring changes from the fork into `{work.base_branch}`'s "
            f"repository that codex-bot does not push: {listed}"
        )


def remote_push_checks(repo: Repository, work: Work, start: checkout.Checkout, earlier: str) -> str:
    """The checks before a push that GitHub answers; returns what `ensure_branch_unmoved` does."""
    ensure_push_target(repo, work)
    return ensure_branch_unmoved(repo, work, start, earlier)


def _closing(fn: Callable[..., T], repo: Repository, *args: Any) -> T:
    """`fn(repo, *args)`, then `repo` (a client of its own for another thread) closed."""
    try:
        return fn(repo, *args)
    finally:
        repo.close()


def result_notes(
    result: AgentResult, refusals: tuple[Refusal, ...], ran_into: tuple[str, ...]
) -> list[str]:
    """What the result leaves out or ran into, for the pull request's body."""
    return [
        *(note for note in (result.not_done,) if note),
        *(f"{text.code_span(refusal.path)} was left out: {refusal.reason}" for refusal in refusals),
        *(f"A command of the agent's ran into this: {note}" for note in ran_into),
    ]


class GitHubPublisher:
    """The bot's branch pushed to the repository, and a pull request for it (or replies on the
    pull request it follows up)."""

    def __init__(self, repo: Repository, settings: Settings) -> None:
        self.repo = repo
        self._settings = settings
        self._template_ahead: Future[str | None] | None = None  # read while the push goes on

    def push(
        self,
        task: Task,
        work: Work,
        start: checkout.Checkout,
        patch: bytes,
        result: AgentResult,
        policy: ChangePolicy,
        ahead: checkout.AppliedPatch | None = None,
    ) -> Pushed:
        """The patch committed on the task's branch and pushed; the PR is `publish`'s.

        The checks GitHub answers (the branch is the bot's, and unmoved) run on a client of
        their own while the patch is applied, judged and committed here; each of them decides
        before anything is pushed, and a refusal is the reason shown even when a step here
        failed too, as when they ran first."""
        with task.timings.stage("push"):
            ensure_still_newest(task)
            if work.opens_pull:
                self._template_ahead = on_a_thread(_closing, self._template_on, self.repo.sibling())
            checks = self.repo.sibling()
            earlier, (sha, message, changed) = alongside(
                partial(_closing, remote_push_checks, checks, work, start, task.record.pushed),
                partial(self._commit, task, work, start, patch, result, policy, ahead),
            )
            ensure_owner(task)
            sha = checkout.push(
                start, sha, branch=work.branch, message=message, token=self.repo.token,
                replace=earlier,
            )  # fmt: skip
            task.record.pushed = sha
            tasks.save(task.redis, task.record)
        return Pushed(sha, message, changed)

    def _commit(
        self,
        task: Task,
        work: Work,
        start: checkout.Checkout,
        patch: bytes,
        result: AgentResult,
        policy: ChangePolicy,
        ahead: checkout.AppliedPatch | None,
    ) -> tuple[str, str, list[str]]:
        """The patch checked, judged and committed on the worker: (sha, message, changed)."""
        ensure_no_known_secret(task, patch)
        changed = checkout.apply_patch(
            start, patch=patch, branch=work.branch, policy=policy, ahead=ahead
        )
        if work.from_fork:
            ensure_fork_branch_allowed(start, work, policy)
        message = task.redact(
            commit_message_for(task, work, start, result, changed, self._co_author(task))
        )
        return checkout.commit(start, message=message), message, changed

    def _co_author(self, task: Task) -> str | None:
        record = task.record
        if not self._settings.codex_co_author or record.request.sender_id is None:
            return None
        email = text.noreply_email(record.request.sender, record.request.sender_id)
        return text.co_author_trailer(record.request.sender, email)

    def publish(
        self,
        task: Task,
        work: Work,
        pushed: Pushed,
        result: AgentResult,
        tests: tuple[TestOutcome, TestOutcome],
        refusals: tuple[Refusal, ...] = (),
        ran_into: tuple[str, ...] = (),
        tries: str = "",
    ) -> dict:
        """The pull request for the pushed change, or replies on the one it follows up; `tries`
        is the table of a task's tries (`workers.attempts`)."""
        before, after = tests
        sha, message, changed = pushed.sha, pushed.message, pushed.changed
        reason = result.reason if result.status != "finished" else ""
        draft = text.draft_line(after.run, result.status, reason) is not None
        pull_url = ""
        if work.opens_pull:
            body = text.pr_body(
                issue_number=task.record.request.number,
                summary=result.summary,
                changed_files=changed,
                tests_before=before.run,
                tests_after=after.run,
                steps=result.steps,
                tokens=result.prompt_tokens + result.completion_tokens,
                notes=result_notes(result, refusals, ran_into),
                status=result.status,
                reason=reason,
                pre_existing=compare_runs(before.output, after.output).pre_existing,
                task_url=self._settings.task_url(task.id) or None,
                template=self._pull_request_template(),
                tries=tries,
            )
            ensure_owner(task)
            pull = self.repo.open_pull_request(
                head=work.branch,
                base=work.base_branch,
                title=message.splitlines()[0],
                body=task.redact(body),
                draft=draft,
            )
            pull_url = pull.url
            # Both only once the pull request is open; each on a client of its own.
            asked = on_a_thread(
                _closing, self._ask_for_review_on, self.repo.sibling(), task, pull.number
            )
            self.label(pull.number)
            asked.result()
        elif work.pull is not None:
            pull_url = work.pull.url
        for comment in work.review_comments:
            self.repo.reply_to_review_comment(
                task.record.request.number,
                comment.id,
                f"Addressed in {sha[:12]}: {message.splitlines()[0]}",
            )
        log.info("published", branch=work.branch, sha=sha, pr=pull_url, draft=draft)
        return {
            "pr_url": pull_url,
            "branch": work.branch,
            "sha": sha,
            "commit_message": message,
            "draft": draft,
            "changed_files": changed,
        }

    def review(
        self, task: Task, work: Work, result: AgentResult, diff: str, start: checkout.Checkout
    ) -> dict:
        """One pull-request review: the summary, and the findings on lines of the diff inline."""
        posted = review.build_review(
            result.summary,
            result.findings,
            review.commentable_lines(diff),
            review.line_counter(start.path),
            self._settings.task_url(task.id),
        )
        comments = [
            {**comment, "body": task.redact(comment["body"])} for comment in posted.comments
        ]
        number = task.record.request.number
        review_id = self.repo.create_review(
            number, body=task.redact(posted.body), comments=comments
        )
        log.info("reviewed", findings=len(comments), dropped=posted.dropped, review_id=review_id)
        shown = f"Reviewed: {review.counts(posted.severities)}."
        return {"answer": shown, "review_id": review_id, "dropped": posted.dropped}

    def _pull_request_template(self) -> str | None:
        """The template read while the push went on, else read now."""
        ahead, self._template_ahead = self._template_ahead, None
        return ahead.result() if ahead is not None else self._template_on(self.repo)

    @staticmethod
    def _template_on(repo: Repository) -> str | None:
        """The repository's pull-request template; a body without it beats no pull request."""
        try:
            return pull_request_template(repo)
        except GitHubError:
            log.warning("pull request template not read", exc_info=True)
            return None

    def _ask_for_review_on(self, repo: Repository, task: Task, number: int) -> None:
        self.ask_for_review(task.record.request.sender, number, repo)

    def label(self, number: int) -> None:
        """The bot's pull requests carry the trigger label, so they are easy to find."""
        try:
            self.repo.add_labels(number, [self._settings.codex_trigger_label])
        except GitHubError:
            log.warning("pull request not labelled", number=number, exc_info=True)

    def ask_for_review(self, sender: str, number: int, repo: Repository | None = None) -> None:
        """The person who asked reviews the result; a bot that asked (CI) is not asked back."""
        if sender.lower().endswith("[bot]"):
            return
        try:
            (repo or self.repo).request_review(number, sender)
        except GitHubError:
            log.warning("review not requested", reviewer=sender, exc_info=True)
