"""The simulator's memory: what GitHub would have stored, as plain records behind one lock.

Git content itself lives in bare repositories on disk (see ``git_http``); everything else
(issues, pull requests, comments, tokens, recorded traffic) lives here.
"""

from __future__ import annotations

import itertools
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PERMISSIONS = ("admin", "maintain", "write", "triage", "read", "none")
REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
TOKEN_ALPHABET = string.ascii_letters + string.digits


class SimError(ValueError):
    """A Python-API call the simulator cannot honour (unknown repo, bad permission, ...)."""


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class User:
    id: int
    login: str
    type: str = "User"  # "User", "Bot" or "Organization"


@dataclass
class Installation:
    id: int
    account: str
    created_at: datetime


@dataclass
class Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None


@dataclass
class Repo:
    id: int
    owner: str
    name: str
    installation_id: int
    default_branch: str
    private: bool
    bare_path: Path
    created_at: datetime
    labels: dict[str, Label] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)
    fork_of: str | None = None  # the parent's full name, for a fork
    protected_branches: set[str] = field(default_factory=set)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Pull:
    head_ref: str
    base_ref: str
    head_sha: str
    base_sha: str
    head_repo: str  # full name of the repository holding head_ref (a fork, or the base repo)
    draft: bool = False
    merged: bool = False
    maintainer_can_modify: bool = False
    requested_reviewers: list[str] = field(default_factory=list)


@dataclass
class Issue:
    """An issue, or a pull request when ``pull`` is set (they share numbers, as on GitHub)."""

    id: int
    number: int
    title: str
    body: str | None
    user: str
    created_at: datetime
    updated_at: datetime
    labels: list[str] = field(default_factory=list)
    state: str = "open"
    closed_at: datetime | None = None
    pull: Pull | None = None
    pull_id: int | None = None


@dataclass
class Comment:
    id: int
    repo: str
    issue_number: int
    user: str
    body: str
    created_at: datetime
    updated_at: datetime
    via_app: bool = False


@dataclass
class Review:
    id: int
    repo: str
    pull_number: int
    user: str
    body: str | None
    state: str  # "approved", "changes_requested" or "commented" (webhook spelling)
    commit_id: str
    submitted_at: datetime
    via_app: bool = False


@dataclass
class ReviewComment:
    """An inline comment on a pull request's diff (a thread root, or a reply in a thread)."""

    id: int
    repo: str
    pull_number: int
    review_id: int
    user: str
    body: str
    path: str
    line: int
    side: str  # "RIGHT" (the head's lines) or "LEFT" (the base's)
    position: int  # line offset in the file's diff, counted from its first hunk header
    diff_hunk: str
    commit_id: str
    created_at: datetime
    updated_at: datetime
    in_reply_to_id: int | None = None
    via_app: bool = False


@dataclass
class Reaction:
    id: int
    user: str
    content: str
    created_at: datetime
    subject: tuple[str, int]  # ("issue", number), ("comment", id) or ("review_comment", id)
    repo: str
    # Precise clocks for latency measurements: time.monotonic() and time.time(), both in ms.
    monotonic_ms: float = field(default_factory=lambda: time.monotonic() * 1000)
    unix_ms: float = field(default_factory=lambda: time.time() * 1000)


@dataclass
class Token:
    value: str
    installation_id: int
    expires_at: datetime


@dataclass
class Push:
    repo: str
    ref: str
    old_sha: str
    new_sha: str


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    status: int
    request_json: Any
    response_json: Any
    headers: dict[str, str]


@dataclass
class Delivery:
    delivery_id: str
    event: str
    status_code: int
    response_body: str
    duration_ms: float
    # When the POST started, on time.monotonic() in ms (compare with Reaction.monotonic_ms).
    started_monotonic_ms: float = 0.0
    # GitHub's record of the attempt (GET /app/hook/deliveries): its numeric id, when, whether
    # it repeats an earlier delivery of the same ``delivery_id`` (the guid), and a short status.
    id: int = 0
    delivered_at: datetime | None = None
    redelivery: bool = False
    status: str = ""


@dataclass
class SentWebhook:
    """A delivery together with what was sent, for tests that validate payloads."""

    delivery: Delivery
    payload: dict[str, Any]
    headers: dict[str, str]


@dataclass
class CheckRun:
    """A check run on a commit, made by the App (``POST /repos/{o}/{r}/check-runs``)."""

    id: int
    repo: str
    head_sha: str
    name: str
    status: str  # queued, in_progress, completed
    conclusion: str | None
    started_at: datetime
    completed_at: datetime | None = None
    details_url: str | None = None
    external_id: str | None = None
    title: str | None = None
    summary: str | None = None
    text: str | None = None
    suite_id: int | None = None
    ci_app: str | None = None  # the slug of the CI app that made it; None: the App itself


@dataclass
class Job:
    """One job of a workflow run, with its log."""

    id: int
    name: str
    conclusion: str
    log: str


@dataclass
class WorkflowRun:
    """A GitHub Actions run that has completed on a branch (the simulator runs no workflows:
    a test says how it went, `GitHubSim.complete_workflow_run`)."""

    id: int
    repo: str
    name: str
    head_branch: str
    head_sha: str
    conclusion: str
    created_at: datetime
    jobs: list[Job] = field(default_factory=list)
    pull_numbers: list[int] = field(default_factory=list)


class State:
    """All mutable simulator data. Callers hold ``lock`` while reading or changing it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._ids = itertools.count(1001)
        self._delivery_ids = itertools.count(90_000_000_001)
        self.users: dict[str, User] = {}
        self.installations: dict[int, Installation] = {}
        self.repos: dict[str, Repo] = {}
        self.issues: dict[str, dict[int, Issue]] = {}
        self.comments: dict[int, Comment] = {}
        self.reviews: dict[int, Review] = {}
        self.review_comments: dict[int, ReviewComment] = {}
        self.check_runs: dict[int, CheckRun] = {}
        self.workflow_runs: dict[int, WorkflowRun] = {}
        self.reactions: list[Reaction] = []
        self.tokens: dict[str, Token] = {}
        self.pushes: list[Push] = []
        self.requests: list[RecordedRequest] = []
        self.webhooks: list[SentWebhook] = []
        self.api_calls = 0

    def next_id(self) -> int:
        return next(self._ids)

    def next_delivery_id(self) -> int:
        return next(self._delivery_ids)

    def ensure_user(self, login: str, type: str | None = None) -> User:
        """The user ``login``, created if new; a ``[bot]`` login is a Bot, as on GitHub."""
        with self.lock:
            if login not in self.users:
                kind = type or ("Bot" if login.lower().endswith("[bot]") else "User")
                self.users[login] = User(id=self.next_id(), login=login, type=kind)
            return self.users[login]

    def repo(self, full_name: str) -> Repo | None:
        return self.repos.get(full_name.lower())

    def issue(self, full_name: str, number: int) -> Issue | None:
        return self.issues.get(full_name.lower(), {}).get(number)

    def next_issue_number(self, full_name: str) -> int:
        return len(self.issues.setdefault(full_name.lower(), {})) + 1

    def ensure_label(self, repo: Repo, name: str) -> Label:
        key = name.lower()
        if key not in repo.labels:
            repo.labels[key] = Label(id=self.next_id(), name=name)
        return repo.labels[key]

    def mint_token(self, installation_id: int, ttl: timedelta) -> Token:
        value = "ghs_" + "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(36))
        token = Token(
            value=value, installation_id=installation_id, expires_at=datetime.now(UTC) + ttl
        )
        with self.lock:
            self.tokens[value] = token
        return token

    def valid_token(self, value: str) -> Token | None:
        with self.lock:
            token = self.tokens.get(value)
        if token is None or token.expires_at <= datetime.now(UTC):
            return None
        return token
