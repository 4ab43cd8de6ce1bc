"""``GitHubSim``: a GitHub Enterprise Server stand-in on loopback, driven from Python.

The HTTP side (REST under ``/api/v3``, git smart HTTP at the root, admin under ``/_sim``) is in
``server``; this class owns the state, renders it through ``payloads``, and sends webhooks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import structlog
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sim.github import git_http, payloads
from sim.github.payloads import App, Urls
from sim.github.server import create_app
from sim.github.state import (
    PERMISSIONS,
    Comment,
    Delivery,
    Installation,
    Issue,
    Push,
    Reaction,
    RecordedRequest,
    Repo,
    SentWebhook,
    SimError,
    State,
    utcnow,
)

log = structlog.get_logger("sim.github")

HOOK_ID = 424242
USER_AGENT = "GitHub-Hookshot/sim"


class QuietRequestHandler(WSGIRequestHandler):
    """The simulator records requests itself; keep werkzeug's request lines out of test output."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class GitHubSim:
    TOKEN_TTL_SECONDS = 3600
    WEBHOOK_TIMEOUT_SECONDS = 30.0

    def __init__(
        self,
        app_id: int,
        app_public_key_pem: bytes,
        webhook_url: str | None,
        webhook_secret: str,
        data_dir: Path,
        *,
        app_slug: str = "codex-bot",
        port: int = 0,
        token_ttl_seconds: float | None = None,
    ) -> None:
        self.app = App(id=app_id, slug=app_slug, name=app_slug, owner="octo-org")
        self.app_public_key_pem = app_public_key_pem
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.data_dir = Path(data_dir).resolve()
        self.token_ttl = timedelta(
            seconds=self.TOKEN_TTL_SECONDS if token_ttl_seconds is None else token_ttl_seconds
        )
        self.state = State()
        self.state.ensure_user(self.app.owner, type="Organization")
        self.state.ensure_user(self.bot_login, type="Bot")
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._urls: Urls | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.repos_root.mkdir(parents=True, exist_ok=True)
        self._server = make_server(
            "127.0.0.1",
            self._port,
            create_app(self),
            threaded=True,
            request_handler=QuietRequestHandler,
        )
        self._urls = Urls(html=f"http://127.0.0.1:{self._server.server_port}")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="github-sim",
            daemon=True,
        )
        self._thread.start()
        log.info("github_sim.started", url=self.url)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None
        log.info("github_sim.stopped")

    def __enter__(self) -> GitHubSim:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def urls(self) -> Urls:
        if self._urls is None:
            raise SimError("the simulator is not started")
        return self._urls

    @property
    def url(self) -> str:
        return self.urls.html

    @property
    def api_url(self) -> str:
        return self.urls.api

    @property
    def bot_login(self) -> str:
        return f"{self.app.slug}[bot]"

    @property
    def repos_root(self) -> Path:
        return self.data_dir / "repos"

    # ---- seeding ------------------------------------------------------------------------------

    def add_user(self, login: str, type: str = "User") -> dict[str, Any]:
        user = self.state.ensure_user(login, type=type)
        return payloads.user_json(self.urls, user)

    def set_permission(self, full_name: str, user: str, permission: str) -> None:
        if permission not in PERMISSIONS:
            raise SimError(f"permission must be one of {PERMISSIONS}")
        with self.state.lock:
            repo = self.require_repo(full_name)
            self.state.ensure_user(user)
            repo.permissions[user] = permission

    def create_repo(
        self,
        full_name: str,
        source_dir: Path,
        installation_id: int = 1,
        default_branch: str = "main",
        private: bool = True,
    ) -> dict[str, Any]:
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise SimError(f"repository name must be owner/name, got {full_name!r}")
        bare = self.repos_root / owner / f"{name}.git"
        if self.state.repo(full_name) is not None or bare.exists():
            raise SimError(f"repository {full_name} already exists")
        git_http.init_bare(bare, default_branch)
        git_http.import_directory(bare, Path(source_dir), default_branch)
        with self.state.lock:
            account = self.state.users.get(owner) or self.state.ensure_user(
                owner, type="Organization"
            )
            if installation_id not in self.state.installations:
                self.state.installations[installation_id] = Installation(
                    id=installation_id, account=account.login, created_at=utcnow()
                )
            repo = Repo(
                id=self.state.next_id(),
                owner=owner,
                name=name,
                installation_id=installation_id,
                default_branch=default_branch,
                private=private,
                bare_path=bare,
                created_at=utcnow(),
            )
            repo.permissions[owner] = "admin"
            self.state.repos[full_name.lower()] = repo
            self.state.issues[full_name.lower()] = {}
        log.info("github_sim.repo_created", repo=full_name, installation_id=installation_id)
        return self.render_repo(repo)

    def create_issue(
        self,
        full_name: str,
        title: str,
        body: str | None,
        user: str = "octo-maintainer",
        labels: Sequence[str] = (),
    ) -> dict[str, Any]:
        with self.state.lock:
            repo = self.require_repo(full_name)
            issue = self.new_issue(repo, title=title, body=body, user=user)
            for label in labels:
                self.state.ensure_label(repo, label)
                issue.labels.append(label)
            return self.render_issue(repo, issue)

    def new_issue(self, repo: Repo, *, title: str, body: str | None, user: str) -> Issue:
        self.state.ensure_user(user)
        now = utcnow()
        issue = Issue(
            id=self.state.next_id(),
            number=self.state.next_issue_number(repo.full_name),
            title=title,
            body=body,
            user=user,
            created_at=now,
            updated_at=now,
        )
        self.state.issues[repo.full_name.lower()][issue.number] = issue
        return issue

    def new_comment(
        self, repo: Repo, number: int, body: str, user: str, *, via_app: bool
    ) -> Comment:
        self.state.ensure_user(user)
        now = utcnow()
        comment = Comment(
            id=self.state.next_id(),
            repo=repo.full_name,
            issue_number=number,
            user=user,
            body=body,
            created_at=now,
            updated_at=now,
            via_app=via_app,
        )
        self.state.comments[comment.id] = comment
        return comment

    # ---- user actions that send webhooks -------------------------------------------------------

    def add_label(
        self, full_name: str, number: int, label: str, sender: str = "octo-maintainer"
    ) -> Delivery:
        """Label an issue as ``sender`` would in the web UI, and deliver ``issues.labeled``."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            issue = self.require_issue(full_name, number)
            label_record = self.state.ensure_label(repo, label)
            if label_record.name.lower() not in (name.lower() for name in issue.labels):
                issue.labels.append(label_record.name)
                issue.updated_at = utcnow()
            payload = payloads.webhook_issues(
                "labeled",
                issue=self.render_issue(repo, issue),
                label=payloads.label_json(self.urls, repo, label_record),
                repository=self.render_repo(repo),
                sender=self.render_user(sender),
                installation_id=repo.installation_id,
            )
        return self.deliver("issues", payload)

    def open_issue(
        self, full_name: str, title: str, body: str | None, user: str = "octo-maintainer"
    ) -> tuple[dict[str, Any], Delivery]:
        """Open an issue and deliver ``issues.opened``."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            issue_json = self.create_issue(full_name, title, body, user=user)
            payload = payloads.webhook_issues(
                "opened",
                issue=issue_json,
                repository=self.render_repo(repo),
                sender=self.render_user(user),
                installation_id=repo.installation_id,
            )
        return issue_json, self.deliver("issues", payload)

    def comment(
        self, full_name: str, number: int, body: str, user: str = "octo-maintainer"
    ) -> tuple[dict[str, Any], Delivery]:
        """Comment on an issue or PR as ``user`` and deliver ``issue_comment.created``."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            issue = self.require_issue(full_name, number)
            comment = self.new_comment(repo, number, body, user, via_app=False)
            comment_json = self.render_comment(repo, comment)
            payload = payloads.webhook_issue_comment(
                "created",
                issue=self.render_issue(repo, issue),
                comment=comment_json,
                repository=self.render_repo(repo),
                sender=self.render_user(user),
                installation_id=repo.installation_id,
            )
        return comment_json, self.deliver("issue_comment", payload)

    def edit_comment(self, comment_id: int, body: str, user: str | None = None) -> Delivery:
        """Edit a comment and deliver ``issue_comment.edited`` (with ``changes.body.from``)."""
        with self.state.lock:
            comment = self.state.comments.get(comment_id)
            if comment is None:
                raise SimError(f"no comment {comment_id}")
            repo = self.require_repo(comment.repo)
            previous = comment.body
            comment.body = body
            comment.updated_at = utcnow()
            payload = payloads.webhook_issue_comment(
                "edited",
                issue=self.render_issue(
                    repo, self.require_issue(repo.full_name, comment.issue_number)
                ),
                comment=self.render_comment(repo, comment),
                repository=self.render_repo(repo),
                sender=self.render_user(user or comment.user),
                installation_id=repo.installation_id,
                previous_body=previous,
            )
        return self.deliver("issue_comment", payload)

    def submit_review(
        self,
        full_name: str,
        number: int,
        body: str | None,
        user: str = "octo-maintainer",
        state: str = "commented",
    ) -> Delivery:
        """Submit a PR review (``commented``/``approved``/``changes_requested``) and deliver it."""
        with self.state.lock:
            repo, issue = self.require_pull(full_name, number)
            reviewer = self.state.ensure_user(user)
            review = payloads.review_json(
                self.urls,
                repo,
                number,
                review_id=self.state.next_id(),
                user=reviewer,
                body=body,
                state=state,
                commit_id=self.pull_head_sha(repo, issue),
                submitted_at=utcnow(),
            )
            payload = payloads.webhook_pull_request_review(
                review=review,
                pull_request=self.render_pull(repo, issue, simple=True),
                repository=self.render_repo(repo),
                sender=self.render_user(user),
                installation_id=repo.installation_id,
            )
        return self.deliver("pull_request_review", payload)

    def add_review_comment(
        self,
        full_name: str,
        number: int,
        body: str,
        path: str,
        line: int = 1,
        user: str = "octo-maintainer",
    ) -> Delivery:
        """Comment on a line of a PR's diff and deliver ``pull_request_review_comment.created``."""
        with self.state.lock:
            repo, issue = self.require_pull(full_name, number)
            author = self.state.ensure_user(user)
            comment = payloads.review_comment_json(
                self.urls,
                repo,
                number,
                comment_id=self.state.next_id(),
                review_id=self.state.next_id(),
                user=author,
                body=body,
                path=path,
                line=line,
                commit_id=self.pull_head_sha(repo, issue),
                created_at=utcnow(),
            )
            payload = payloads.webhook_pull_request_review_comment(
                comment=comment,
                pull_request=self.render_pull(repo, issue, simple=True),
                repository=self.render_repo(repo),
                sender=self.render_user(user),
                installation_id=repo.installation_id,
            )
        return self.deliver("pull_request_review_comment", payload)

    def ping(self) -> Delivery:
        payload = payloads.webhook_ping(
            hook_id=HOOK_ID,
            app_id=self.app.id,
            hook_url=f"{self.api_url}/app/hook",
            webhook_url=self.webhook_url or "",
            sender=self.render_user(self.app.owner),
        )
        return self.deliver("ping", payload)

    # ---- webhooks -----------------------------------------------------------------------------

    def deliver(
        self, event: str, payload: dict[str, Any], delivery_id: str | None = None
    ) -> Delivery:
        """POST ``payload`` to the webhook URL, signed like GitHub signs it."""
        if not self.webhook_url:
            raise SimError("no webhook_url configured")
        body = json.dumps(payload).encode("utf-8")
        delivery_id = delivery_id or str(uuid.uuid4())
        headers = webhook_headers(event, delivery_id, body, self.webhook_secret, self.app.id)
        started = time.monotonic()
        try:
            response = requests.post(
                self.webhook_url, data=body, headers=headers, timeout=self.WEBHOOK_TIMEOUT_SECONDS
            )
            status, text = response.status_code, response.text
        except requests.RequestException as error:
            status, text = 0, f"delivery failed: {type(error).__name__}"
        delivery = Delivery(
            delivery_id=delivery_id,
            event=event,
            status_code=status,
            response_body=text,
            duration_ms=(time.monotonic() - started) * 1000,
        )
        with self.state.lock:
            self.state.webhooks.append(
                SentWebhook(delivery=delivery, payload=payload, headers=headers)
            )
        log.info(
            "github_sim.webhook_delivered",
            event_name=event,
            action=payload.get("action"),
            delivery_id=delivery_id,
            status=status,
        )
        return delivery

    # ---- what a user would see ----------------------------------------------------------------

    def issue_comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        with self.state.lock:
            repo = self.require_repo(full_name)
            return [self.render_comment(repo, c) for c in self.comments_on(repo, number)]

    def issue(self, full_name: str, number: int) -> dict[str, Any]:
        with self.state.lock:
            repo = self.require_repo(full_name)
            return self.render_issue(repo, self.require_issue(full_name, number))

    def pulls(self, full_name: str) -> list[dict[str, Any]]:
        with self.state.lock:
            repo = self.require_repo(full_name)
            return [
                self.render_pull(repo, issue)
                for issue in self.state.issues[repo.full_name.lower()].values()
                if issue.pull is not None
            ]

    def reactions(
        self, full_name: str, *, number: int | None = None, comment_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Reactions in a repo, optionally only those on one issue/PR or one comment."""
        with self.state.lock:
            return [
                payloads.reaction_json(self.urls, r, self.state.users[r.user])
                for r in self.state.reactions
                if r.repo.lower() == full_name.lower()
                and (number is None or r.subject == ("issue", number))
                and (comment_id is None or r.subject == ("comment", comment_id))
            ]

    def branch_sha(self, full_name: str, branch: str) -> str | None:
        return git_http.ref_sha(self.bare_repo_path(full_name), f"refs/heads/{branch}")

    def bare_repo_path(self, full_name: str) -> Path:
        return self.require_repo(full_name).bare_path

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def pushes(self) -> list[Push]:
        with self.state.lock:
            return list(self.state.pushes)

    @property
    def webhooks(self) -> list[SentWebhook]:
        with self.state.lock:
            return list(self.state.webhooks)

    # ---- lookups and rendering (callers hold state.lock) ------------------------------------

    def require_repo(self, full_name: str) -> Repo:
        repo = self.state.repo(full_name)
        if repo is None:
            raise SimError(f"no repository {full_name}")
        return repo

    def require_issue(self, full_name: str, number: int) -> Issue:
        issue = self.state.issue(full_name, number)
        if issue is None:
            raise SimError(f"no issue {full_name}#{number}")
        return issue

    def require_pull(self, full_name: str, number: int) -> tuple[Repo, Issue]:
        repo = self.require_repo(full_name)
        issue = self.require_issue(full_name, number)
        if issue.pull is None:
            raise SimError(f"{full_name}#{number} is an issue, not a pull request")
        return repo, issue

    def comments_on(self, repo: Repo, number: int) -> list[Comment]:
        return [
            c
            for c in self.state.comments.values()
            if c.repo.lower() == repo.full_name.lower() and c.issue_number == number
        ]

    def reactions_on(self, subject: tuple[str, int], repo: Repo) -> list[Reaction]:
        return [
            r
            for r in self.state.reactions
            if r.subject == subject and r.repo.lower() == repo.full_name.lower()
        ]

    def render_user(self, login: str) -> dict[str, Any]:
        return payloads.user_json(self.urls, self.state.ensure_user(login))

    def render_repo(self, repo: Repo) -> dict[str, Any]:
        open_issues = sum(
            i.state == "open" for i in self.state.issues[repo.full_name.lower()].values()
        )
        return payloads.repo_json(
            self.urls, repo, self.state.users[repo.owner], open_issues=open_issues
        )

    def render_issue(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        return payloads.issue_json(
            self.urls,
            repo,
            issue,
            users=self.state.users,
            comments=len(self.comments_on(repo, issue.number)),
            reactions=self.reactions_on(("issue", issue.number), repo),
        )

    def render_comment(self, repo: Repo, comment: Comment) -> dict[str, Any]:
        issue = self.state.issue(repo.full_name, comment.issue_number)
        app = None
        if comment.via_app:
            app = payloads.app_json(self.urls, self.app, self.state.users[self.app.owner])
        return payloads.comment_json(
            self.urls,
            repo,
            comment,
            user=self.state.users[comment.user],
            reactions=self.reactions_on(("comment", comment.id), repo),
            app=app,
            is_pull=issue is not None and issue.pull is not None,
        )

    def pull_head_sha(self, repo: Repo, issue: Issue) -> str:
        """An open PR follows its head branch, as on GitHub; a closed one keeps its last sha."""
        assert issue.pull is not None
        if issue.state == "open":
            current = git_http.ref_sha(repo.bare_path, f"refs/heads/{issue.pull.head_ref}")
            if current:
                issue.pull.head_sha = current
        return issue.pull.head_sha

    def render_pull(self, repo: Repo, issue: Issue, *, simple: bool = False) -> dict[str, Any]:
        assert issue.pull is not None
        head = self.pull_head_sha(repo, issue)
        base = git_http.ref_sha(repo.bare_path, f"refs/heads/{issue.pull.base_ref}")
        issue.pull.base_sha = base or issue.pull.base_sha
        commits = git_http.count_commits(repo.bare_path, f"{issue.pull.base_sha}..{head}")
        return payloads.pull_json(
            self.urls,
            repo,
            issue,
            users=self.state.users,
            comments=len(self.comments_on(repo, issue.number)),
            commits=commits,
            simple=simple,
        )


def webhook_headers(
    event: str, delivery_id: str, body: bytes, secret: str, app_id: int
) -> dict[str, str]:
    key = secret.encode("utf-8")
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id,
        "X-GitHub-Hook-ID": str(HOOK_ID),
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-GitHub-Hook-Installation-Target-ID": str(app_id),
        "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
    }
