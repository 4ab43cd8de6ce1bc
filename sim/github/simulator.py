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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import structlog
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

from sim.github import diff, git_http, payloads
from sim.github.payloads import App, Urls
from sim.github.server import ApiError, create_app, open_pull_request
from sim.github.state import (
    PERMISSIONS,
    CheckRun,
    Comment,
    Delivery,
    Installation,
    Issue,
    Job,
    Push,
    Reaction,
    RecordedRequest,
    Repo,
    Review,
    ReviewComment,
    SentWebhook,
    SimError,
    State,
    WorkflowRun,
    utcnow,
)
from sim.serving import serve_in_thread

log = structlog.get_logger("sim.github")

HOOK_ID = 424242
USER_AGENT = "GitHub-Hookshot/sim"
# A fork owned by someone the app is not installed for: no installation covers it.
NO_INSTALLATION = 0
# submit_review's state, in the webhook's spelling, from either spelling GitHub uses.
REVIEW_STATES = {
    "approved": "approved",
    "approve": "approved",
    "changes_requested": "changes_requested",
    "request_changes": "changes_requested",
    "commented": "commented",
    "comment": "commented",
}


@dataclass
class SubmittedReview:
    """What ``submit_review`` did: the review and its inline comments (REST shapes), and the
    deliveries in the order sent (the review's first, then one per inline comment)."""

    review: dict[str, Any]
    comments: list[dict[str, Any]]
    deliveries: list[Delivery]


class QuietRequestHandler(WSGIRequestHandler):
    """The simulator records requests itself; keep werkzeug's request lines out of test output."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class GitHubSim:
    TOKEN_TTL_SECONDS = 3600
    WEBHOOK_TIMEOUT_SECONDS = 30.0
    MANIFEST_CODE_TTL_SECONDS = 3600  # GitHub: "You must complete this step within one hour"

    def __init__(
        self,
        app_id: int,
        app_public_key_pem: bytes,
        webhook_url: str | None,
        webhook_secret: str,
        data_dir: Path,
        *,
        app_slug: str = "codex-bot",
        host: str = "127.0.0.1",
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
        # GitHub delivers the app's own actions (its comments, replies) to the app too; off by
        # default so a test opts in to that traffic.
        self.echo_app_events = False
        # The manifest flow: codes GitHub hands back after its "new app" form, and who is
        # signed in to the web pages (the account a personal App belongs to).
        self.manifest_codes: dict[str, tuple[dict[str, Any], str, float]] = {}
        self.web_user = "octo-admin"
        self._background: list[threading.Thread] = []
        # While set (``held``), user actions record their webhooks here instead of sending them.
        self._held: list[tuple[str, dict[str, Any]]] | None = None
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._urls: Urls | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.repos_root.mkdir(parents=True, exist_ok=True)
        self._server, self._thread = serve_in_thread(
            create_app(self),
            host=self._host,
            port=self._port,
            name="github-sim",
            request_handler=QuietRequestHandler,
        )
        self._urls = Urls(html=f"http://{self._host}:{self._server.server_port}")
        log.info("github_sim.started", url=self.url)

    def stop(self) -> None:
        self.wait_for_echoes()
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

    # ---- the App manifest flow ----------------------------------------------------------------

    def register_manifest(self, manifest: dict[str, Any], owner: str | None) -> str:
        """Someone submitted the "new app from manifest" form: a code for the conversion.

        GitHub shows a confirmation page first; the simulator's person always confirms.
        """
        if not isinstance(manifest.get("hook_attributes"), dict) or not manifest.get("url"):
            raise SimError("the manifest needs url and hook_attributes.url")
        code = uuid.uuid4().hex
        with self.state.lock:
            self.manifest_codes[code] = (manifest, owner or self.web_user, time.monotonic())
        return code

    def convert_manifest(self, code: str) -> dict[str, Any] | None:
        """``POST /app-manifests/{code}/conversions``: the new App, its key and secrets, once.

        The simulator becomes that App: later JWTs must be signed with the new key, and
        webhooks go to the manifest's URL, signed with the new secret.
        """
        from sim.github import generate_app_key

        with self.state.lock:
            entry = self.manifest_codes.pop(code, None)
        if entry is None or time.monotonic() - entry[2] > self.MANIFEST_CODE_TTL_SECONDS:
            return None
        manifest, owner, _ = entry
        private_pem, public_pem = generate_app_key()
        name = str(manifest.get("name") or "codex-bot")
        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "app"
        with self.state.lock:
            kind = "Organization" if owner != self.web_user else "User"
            account = self.state.ensure_user(owner, type=kind)
            self.app = App(id=self.state.next_id(), slug=slug, name=name, owner=account.login)
            self.state.ensure_user(self.bot_login, type="Bot")
            self.app_public_key_pem = public_pem
            self.webhook_url = manifest["hook_attributes"].get("url")
            self.webhook_secret = uuid.uuid4().hex + uuid.uuid4().hex
        body = payloads.app_json(self.urls, self.app, account)
        body.update(
            description=manifest.get("description"),
            external_url=manifest["url"],
            installations_count=0,
            permissions=dict(manifest.get("default_permissions") or {}),
            events=list(manifest.get("default_events") or []),
            client_secret=uuid.uuid4().hex,
            webhook_secret=self.webhook_secret,
            pem=private_pem.decode(),
        )
        return body

    # ---- seeding ------------------------------------------------------------------------------

    def add_user(self, login: str, type: str | None = None) -> dict[str, Any]:
        """A user; ``type`` defaults to "Bot" for a ``[bot]`` login and "User" otherwise."""
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

    def create_fork(self, full_name: str, owner: str) -> dict[str, Any]:
        """Fork ``full_name`` into ``owner``'s account, as ``owner`` does on GitHub.

        The fork keeps every branch; the app's installation does not cover it, so the bot can
        read it only when it is public and can never push to it.
        """
        with self.state.lock:
            parent = self.require_repo(full_name)
            fork_name = f"{owner}/{parent.name}"
            bare = self.repos_root / owner / f"{parent.name}.git"
            if self.state.repo(fork_name) is not None or bare.exists():
                raise SimError(f"repository {fork_name} already exists")
            self.state.ensure_user(owner)
            git_http.clone_bare(parent.bare_path, bare)
            git_http.configure_bare(bare)
            fork = Repo(
                id=self.state.next_id(),
                owner=owner,
                name=parent.name,
                installation_id=NO_INSTALLATION,
                default_branch=parent.default_branch,
                private=parent.private,
                bare_path=bare,
                created_at=utcnow(),
                fork_of=parent.full_name,
            )
            fork.permissions[owner] = "admin"
            self.state.repos[fork_name.lower()] = fork
            self.state.issues[fork_name.lower()] = {}
            log.info("github_sim.forked", repo=full_name, fork=fork_name)
            return self.render_repo(fork)

    def push_as(
        self,
        full_name: str,
        branch: str,
        files: Mapping[str, str | None],
        message: str,
        author: str = "octo-maintainer",
    ) -> str:
        """Commit ``files`` (path -> text; ``None`` deletes) on ``branch`` as ``author`` would
        from their clone, a fast-forward push; a missing branch starts at the default branch.
        Returns the new head sha. The push is recorded in ``pushes`` like any other."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            self.state.ensure_user(author)
            ref = f"refs/heads/{branch}"
            old = git_http.ref_sha(repo.bare_path, ref)
            parent = old or git_http.ref_sha(repo.bare_path, f"refs/heads/{repo.default_branch}")
            if parent is None:
                raise SimError(f"{full_name} has no branch {branch} nor a default branch")
            new = git_http.commit_files(
                repo.bare_path,
                parent,
                dict(files),
                message,
                author_name=author,
                author_email=f"{author}@users.noreply.github.local",
            )
            git_http.update_ref(repo.bare_path, ref, new, old or git_http.ZERO_SHA)
            self.state.pushes.append(
                Push(repo=repo.full_name, ref=ref, old_sha=old or git_http.ZERO_SHA, new_sha=new)
            )
        log.info("github_sim.pushed_as", repo=full_name, ref=ref, author=author, new=new)
        return new

    def open_pull(
        self,
        full_name: str,
        head: str,
        title: str,
        body: str | None = None,
        *,
        base: str | None = None,
        user: str = "octo-maintainer",
        draft: bool = False,
    ) -> dict[str, Any]:
        """Open a pull request as ``user``; ``head`` is ``branch`` or ``owner:branch`` (a branch
        of ``owner``'s fork). Refused as GitHub refuses it (duplicate, no commits, ...)."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            request: dict[str, Any] = {
                "title": title,
                "head": head,
                "base": base or repo.default_branch,
                "body": body,
                "draft": draft,
            }
            try:
                issue = open_pull_request(self, repo, request, user=user)
            except ApiError as error:
                raise SimError(f"{error}: {error.body.get('errors')}") from None
            return self.render_pull(repo, issue)

    def install_app(
        self, account: str, installation_id: int, sender: str | None = None
    ) -> Delivery:
        """Install the app on ``account`` (covering its repos that no installation covers yet)
        and deliver ``installation.created``."""
        with self.state.lock:
            owner = self.state.users.get(account) or self.state.ensure_user(
                account, type="Organization"
            )
            if installation_id not in self.state.installations:
                self.state.installations[installation_id] = Installation(
                    id=installation_id, account=owner.login, created_at=utcnow()
                )
            covered = []
            for repo in self.state.repos.values():
                if repo.owner == account and repo.installation_id in (
                    NO_INSTALLATION,
                    installation_id,
                ):
                    repo.installation_id = installation_id
                    covered.append(payloads.installation_repository_json(repo))
            payload = payloads.webhook_installation_created(
                installation=self.render_installation(installation_id),
                repositories=covered,
                sender=self.render_user(sender or account),
            )
        return self.deliver("installation", payload)

    def add_installation_repositories(
        self, installation_id: int, full_names: Sequence[str], sender: str = "octo-maintainer"
    ) -> Delivery:
        """Grant an installation more repositories; deliver ``installation_repositories.added``."""
        with self.state.lock:
            if installation_id not in self.state.installations:
                raise SimError(f"no installation {installation_id}")
            added = []
            for name in full_names:
                repo = self.require_repo(name)
                repo.installation_id = installation_id
                added.append(payloads.installation_repository_json(repo))
            payload = payloads.webhook_installation_repositories_added(
                installation=self.render_installation(installation_id),
                added=added,
                sender=self.render_user(sender),
            )
        return self.deliver("installation_repositories", payload)

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
        self,
        full_name: str,
        title: str,
        body: str | None,
        user: str = "octo-maintainer",
        labels: Sequence[str] = (),
    ) -> tuple[dict[str, Any], Delivery]:
        """Open an issue (already carrying ``labels``) and deliver ``issues.opened``."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            issue_json = self.create_issue(full_name, title, body, user=user, labels=labels)
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
        """Comment on an issue or PR as ``user`` and deliver ``issue_comment.created``.

        A ``[bot]`` login comments as a Bot; the app's own login (``bot_login``) comments
        through the app, so ``performed_via_github_app`` is set, as on GitHub."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            issue = self.require_issue(full_name, number)
            comment = self.new_comment(repo, number, body, user, via_app=user == self.bot_login)
            issue.updated_at = comment.created_at
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
        comments: Sequence[Mapping[str, Any]] = (),
    ) -> SubmittedReview:
        """Submit a review as ``user``: ``state`` is ``commented``, ``approved`` or
        ``changes_requested``; each of ``comments`` is ``{"path", "line", "body"}`` (and
        optionally ``"side"``: ``RIGHT``, the default, or ``LEFT``) on a line of the PR's diff.

        Delivers ``pull_request_review.submitted`` and then one
        ``pull_request_review_comment.created`` per inline comment, as GitHub does.
        """
        review_state = REVIEW_STATES.get(state.lower())
        if review_state is None:
            raise SimError(f"review state must be one of {sorted(set(REVIEW_STATES.values()))}")
        with self.state.lock:
            repo, issue = self.require_pull(full_name, number)
            if review_state != "commented" and user == issue.user:
                raise SimError(f"{user} cannot {state} their own pull request")
            review = self.new_review(repo, issue, user, body, review_state)
            threads = [
                self.new_review_comment(
                    repo,
                    issue,
                    review,
                    user=user,
                    body=str(spec["body"]),
                    path=str(spec["path"]),
                    line=int(spec["line"]),
                    side=str(spec.get("side", "RIGHT")),
                )
                for spec in comments
            ]
            outgoing = self.review_events(repo, issue, review, threads)
            result = SubmittedReview(
                review=self.render_review(repo, review),
                comments=[self.render_review_comment(repo, c) for c in threads],
                deliveries=[],
            )
        result.deliveries = [self.deliver(event, payload) for event, payload in outgoing]
        return result

    def add_review_comment(
        self,
        full_name: str,
        number: int,
        body: str,
        path: str,
        line: int = 1,
        user: str = "octo-maintainer",
        side: str = "RIGHT",
    ) -> tuple[dict[str, Any], Delivery]:
        """A single comment on a line of a PR's diff ("Add single comment" in the web UI).

        GitHub wraps it in a review of its own, so this delivers ``pull_request_review
        .submitted`` (state ``commented``, no body) and then
        ``pull_request_review_comment.created``; it returns the comment (REST shape) and the
        comment's delivery."""
        with self.state.lock:
            repo, issue = self.require_pull(full_name, number)
            review = self.new_review(repo, issue, user, None, "commented")
            comment = self.new_review_comment(
                repo, issue, review, user=user, body=body, path=path, line=line, side=side
            )
            outgoing = self.review_events(repo, issue, review, [comment])
            rendered = self.render_review_comment(repo, comment)
        return rendered, [self.deliver(event, payload) for event, payload in outgoing][-1]

    def reply_to_review_comment(
        self, full_name: str, number: int, comment_id: int, body: str, user: str = "octo-maintainer"
    ) -> tuple[dict[str, Any], Delivery]:
        """Reply in the review thread of ``comment_id`` as ``user`` (a single-comment review, as
        ``add_review_comment``); returns the reply and its delivery."""
        with self.state.lock:
            repo, issue = self.require_pull(full_name, number)
            review = self.new_review(repo, issue, user, None, "commented")
            reply = self.new_reply(repo, issue, review, comment_id, user=user, body=body)
            outgoing = self.review_events(repo, issue, review, [reply])
            rendered = self.render_review_comment(repo, reply)
        return rendered, [self.deliver(event, payload) for event, payload in outgoing][-1]

    def new_review(
        self,
        repo: Repo,
        issue: Issue,
        user: str,
        body: str | None,
        state: str,
        via_app: bool = False,
    ) -> Review:
        self.state.ensure_user(user)
        review = Review(
            id=self.state.next_id(),
            repo=repo.full_name,
            pull_number=issue.number,
            user=user,
            body=body,
            state=state,
            commit_id=self.pull_head_sha(repo, issue),
            submitted_at=utcnow(),
            via_app=via_app,
        )
        self.state.reviews[review.id] = review
        issue.updated_at = review.submitted_at
        return review

    def new_review_comment(
        self,
        repo: Repo,
        issue: Issue,
        review: Review,
        *,
        user: str,
        body: str,
        path: str,
        line: int,
        side: str = "RIGHT",
    ) -> ReviewComment:
        """A thread's first comment, placed in the PR's diff; ``SimError`` if the line is not
        part of the diff (GitHub answers 422 for that)."""
        assert issue.pull is not None
        if side not in ("LEFT", "RIGHT"):
            raise SimError("side must be LEFT or RIGHT")
        head = self.pull_head_sha(repo, issue)
        file_diff = git_http.file_diff(repo.bare_path, issue.pull.base_sha, head, path)
        place = diff.locate_line(file_diff, line, side)
        if place is None:
            raise SimError(
                f"line {line} ({side}) of {path} is not part of the diff of #{issue.number}"
            )
        now = utcnow()
        comment = ReviewComment(
            id=self.state.next_id(),
            repo=repo.full_name,
            pull_number=issue.number,
            review_id=review.id,
            user=user,
            body=body,
            path=path,
            line=line,
            side=side,
            position=place.position,
            diff_hunk=place.diff_hunk,
            commit_id=head,
            created_at=now,
            updated_at=now,
            via_app=review.via_app,
        )
        self.state.review_comments[comment.id] = comment
        return comment

    def new_reply(
        self, repo: Repo, issue: Issue, review: Review, comment_id: int, *, user: str, body: str
    ) -> ReviewComment:
        """A reply in the thread of ``comment_id``; ``in_reply_to_id`` names the thread's root."""
        target = self.state.review_comments.get(comment_id)
        if (
            target is None
            or target.repo.lower() != repo.full_name.lower()
            or target.pull_number != issue.number
        ):
            raise SimError(f"no review comment {comment_id} on {repo.full_name}#{issue.number}")
        root = self.state.review_comments.get(target.in_reply_to_id or target.id, target)
        now = utcnow()
        reply = ReviewComment(
            id=self.state.next_id(),
            repo=repo.full_name,
            pull_number=issue.number,
            review_id=review.id,
            user=user,
            body=body,
            path=root.path,
            line=root.line,
            side=root.side,
            position=root.position,
            diff_hunk=root.diff_hunk,
            commit_id=root.commit_id,
            created_at=now,
            updated_at=now,
            in_reply_to_id=root.id,
            via_app=review.via_app,
        )
        self.state.review_comments[reply.id] = reply
        return reply

    def review_events(
        self, repo: Repo, issue: Issue, review: Review, comments: Sequence[ReviewComment]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The webhooks a submitted review makes, in GitHub's order: the review, then one per
        comment in it."""
        pull_json = self.render_pull(repo, issue, simple=True)
        events = [("pull_request_review", self.review_payload(repo, review, pull_json))]
        events += [
            ("pull_request_review_comment", self.review_comment_payload(repo, c, pull_json))
            for c in comments
        ]
        return events

    def review_payload(
        self, repo: Repo, review: Review, pull_json: dict[str, Any]
    ) -> dict[str, Any]:
        return payloads.webhook_pull_request_review(
            review=payloads.review_json(
                self.urls, repo, review, user=self.state.users[review.user]
            ),
            pull_request=pull_json,
            repository=self.render_repo(repo),
            sender=self.render_user(review.user),
            installation_id=repo.installation_id,
        )

    def review_comment_payload(
        self, repo: Repo, comment: ReviewComment, pull_json: dict[str, Any]
    ) -> dict[str, Any]:
        return payloads.webhook_pull_request_review_comment(
            comment=self.render_review_comment(repo, comment),
            pull_request=pull_json,
            repository=self.render_repo(repo),
            sender=self.render_user(comment.user),
            installation_id=repo.installation_id,
        )

    def pull_request_event(
        self, full_name: str, number: int, action: str = "opened", *, draft: bool | None = None
    ) -> Delivery:
        """Deliver ``pull_request.<action>`` (``opened``, ``ready_for_review``) for a PR, sent
        by its author; ``draft`` changes the PR first (``ready_for_review``: False)."""
        with self.state.lock:
            repo, issue = self.require_pull(full_name, number)
            assert issue.pull is not None
            if draft is not None:
                issue.pull.draft = draft
            payload = payloads.webhook_pull_request(
                action=action,
                pull_request=self.render_pull(repo, issue),
                repository=self.render_repo(repo),
                sender=self.render_user(issue.user),
                installation_id=repo.installation_id,
            )
        return self.deliver("pull_request", payload)

    def complete_workflow_run(
        self,
        full_name: str,
        branch: str,
        jobs: Mapping[str, tuple[str, str]],
        name: str = "CI",
    ) -> tuple[dict[str, Any], Delivery]:
        """A GitHub Actions run on ``branch``'s head has completed: ``jobs`` maps each job's
        name to (conclusion, log text). Delivers ``workflow_run.completed`` (the run fails if a
        job failed), naming the open pull requests from that branch. Returns the run's id and
        jobs' ids, and the delivery."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            sha = git_http.ref_sha(repo.bare_path, f"refs/heads/{branch}")
            if sha is None:
                raise SimError(f"{full_name} has no branch {branch}")
            failed = any(conclusion == "failure" for conclusion, _ in jobs.values())
            run = WorkflowRun(
                id=self.state.next_id(),
                repo=repo.full_name,
                name=name,
                head_branch=branch,
                head_sha=sha,
                conclusion="failure" if failed else "success",
                created_at=utcnow(),
            )
            run.jobs = [
                Job(id=self.state.next_id(), name=job, conclusion=conclusion, log=text)
                for job, (conclusion, text) in jobs.items()
            ]
            self.state.workflow_runs[run.id] = run
            pulls = self.open_pulls_from(repo, branch)
            repo_json = self.render_repo(repo)
            actor = self.render_user(self.bot_login)
            payload = {
                "action": "completed",
                "workflow": payloads.workflow_json(
                    self.urls, repo, name, payloads.iso(run.created_at)
                ),
                "workflow_run": payloads.workflow_run_json(
                    self.urls,
                    repo,
                    run,
                    repo_json=repo_json,
                    actor=actor,
                    pulls=payloads.pull_refs(repo, repo_json, pulls),
                ),
                "repository": repo_json,
                "sender": actor,
                "installation": payloads.webhook_installation_json(repo.installation_id),
            }
            ids = {"run_id": run.id, "job_ids": [job.id for job in run.jobs]}
        return ids, self.deliver("workflow_run", payload)

    def open_pulls_from(self, repo: Repo, branch: str) -> list[dict[str, Any]]:
        return [
            self.render_pull(repo, issue)
            for issue in self.state.issues[repo.full_name.lower()].values()
            if issue.pull is not None
            and issue.state == "open"
            and issue.pull.head_ref == branch
            and issue.pull.head_repo == repo.full_name
        ]

    def complete_check_suite(
        self,
        full_name: str,
        branch: str,
        runs: Mapping[str, tuple[str, str]],
        app_slug: str = "circleci-checks",
    ) -> tuple[int, Delivery]:
        """Another CI app's check suite on ``branch``'s head has completed: ``runs`` maps each
        check run's name to (conclusion, output text). Delivers ``check_suite.completed``;
        returns the suite's id and the delivery."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            sha = git_http.ref_sha(repo.bare_path, f"refs/heads/{branch}")
            if sha is None:
                raise SimError(f"{full_name} has no branch {branch}")
            suite_id, now = self.state.next_id(), utcnow()
            for name, (conclusion, text) in runs.items():
                run = CheckRun(
                    id=self.state.next_id(),
                    repo=repo.full_name,
                    head_sha=sha,
                    name=name,
                    status="completed",
                    conclusion=conclusion,
                    started_at=now,
                    completed_at=now,
                    title=f"{name}: {conclusion}",
                    summary=f"{name} finished with {conclusion}.",
                    text=text,
                    suite_id=suite_id,
                    ci_app=app_slug,
                )
                self.state.check_runs[run.id] = run
            failed = any(conclusion == "failure" for conclusion, _ in runs.values())
            repo_json = self.render_repo(repo)
            suite = payloads.check_suite_json(
                self.urls,
                repo,
                suite_id=suite_id,
                branch=branch,
                sha=sha,
                conclusion="failure" if failed else "success",
                when=payloads.iso(now),
                app=payloads.ci_app_json(self.urls, app_slug, self.state.users[self.app.owner]),
                pulls=payloads.pull_refs(repo, repo_json, self.open_pulls_from(repo, branch)),
                count=len(runs),
            )
            payload = {
                "action": "completed",
                "check_suite": suite,
                "repository": repo_json,
                "sender": self.render_user(self.bot_login),
                "installation": payloads.webhook_installation_json(repo.installation_id),
            }
        return suite_id, self.deliver("check_suite", payload)

    def find_job(self, job_id: int) -> tuple[WorkflowRun, Job] | None:
        for run in self.state.workflow_runs.values():
            for job in run.jobs:
                if job.id == job_id:
                    return run, job
        return None

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
        self,
        event: str,
        payload: dict[str, Any],
        delivery_id: str | None = None,
        *,
        redelivery: bool = False,
    ) -> Delivery:
        """POST ``payload`` to the webhook URL, signed like GitHub signs it, and record the
        attempt as GitHub does (``GET /app/hook/deliveries``), failed or not."""
        if self._held is not None:
            self._held.append((event, payload))
            return Delivery(delivery_id or "", event, 0, "held", 0.0, status="held")
        if not self.webhook_url:
            raise SimError("no webhook_url configured")
        body = json.dumps(payload).encode("utf-8")
        delivery_id = delivery_id or str(uuid.uuid4())
        headers = webhook_headers(event, delivery_id, body, self.webhook_secret, self.app.id)
        delivered_at = utcnow()
        started = time.monotonic()
        started_ms = started * 1000
        try:
            response = requests.post(
                self.webhook_url, data=body, headers=headers, timeout=self.WEBHOOK_TIMEOUT_SECONDS
            )
            status_code, text = response.status_code, response.text
            status = "OK" if 200 <= status_code < 300 else f"Invalid HTTP Response: {status_code}"
        except requests.Timeout:
            status_code, text, status = 0, "delivery failed: Timeout", "timed out"
        except requests.RequestException as error:
            status_code, text = 0, f"delivery failed: {type(error).__name__}"
            status = "failed to connect to host"
        delivery = Delivery(
            delivery_id=delivery_id,
            event=event,
            status_code=status_code,
            response_body=text,
            duration_ms=(time.monotonic() - started) * 1000,
            started_monotonic_ms=started_ms,
            id=self.state.next_delivery_id(),
            delivered_at=delivered_at,
            redelivery=redelivery,
            status=status,
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
            status=status_code,
            redelivery=redelivery,
        )
        return delivery

    @contextmanager
    def held(self) -> Iterator[list[tuple[str, dict[str, Any]]]]:
        """User actions inside (labels, comments, issues opened) change the state as usual but
        send no webhook: their (event, payload) pairs are collected for a caller that sends them
        itself, at its own rate (``bench.soak``)."""
        collected: list[tuple[str, dict[str, Any]]] = []
        with self.state.lock:
            self._held = collected
        try:
            yield collected
        finally:
            with self.state.lock:
                self._held = None

    def redeliver(self, hook_delivery_id: int) -> None:
        """``POST /app/hook/deliveries/{id}/attempts``: send that delivery again, same guid and
        payload, after the API call answers (GitHub queues it)."""
        with self.state.lock:
            sent = next((w for w in self.state.webhooks if w.delivery.id == hook_delivery_id), None)
        if sent is None:
            raise SimError(f"no delivery {hook_delivery_id}")
        self._in_background(
            "github-sim-redeliver",
            lambda: self.deliver(
                sent.delivery.event, sent.payload, sent.delivery.delivery_id, redelivery=True
            ),
        )

    def _in_background(self, name: str, send: Callable[[], object]) -> None:
        thread = threading.Thread(target=send, name=name, daemon=True)
        with self.state.lock:
            self._background = [t for t in self._background if t.is_alive()] + [thread]
        thread.start()

    def echo(self, event: str, payload: dict[str, Any]) -> None:
        """Deliver an event the app itself caused, after the API call that caused it answers
        (GitHub's order), when ``echo_app_events`` is on."""
        if not self.echo_app_events or not self.webhook_url:
            return
        self._in_background("github-sim-echo", lambda: self.deliver(event, payload))

    def wait_for_echoes(self, timeout: float = 30.0) -> None:
        """Wait until every echoed delivery and every redelivery has been sent."""
        deadline = time.monotonic() + timeout
        with self.state.lock:
            pending = list(self._background)
        for thread in pending:
            thread.join(timeout=max(deadline - time.monotonic(), 0))

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
        self,
        full_name: str,
        *,
        number: int | None = None,
        comment_id: int | None = None,
        review_comment_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """Reactions in a repo (REST shape), optionally only those on one issue/PR, one issue
        comment or one review comment."""
        with self.state.lock:
            return [
                payloads.reaction_json(self.urls, r, self.state.users[r.user])
                for r in self.reaction_records(
                    full_name,
                    number=number,
                    comment_id=comment_id,
                    review_comment_id=review_comment_id,
                )
            ]

    def reaction_records(
        self,
        full_name: str,
        *,
        number: int | None = None,
        comment_id: int | None = None,
        review_comment_id: int | None = None,
    ) -> list[Reaction]:
        """The reaction records themselves, with ``monotonic_ms`` and ``unix_ms`` clocks."""
        wanted = [
            subject
            for subject in (
                ("issue", number),
                ("comment", comment_id),
                ("review_comment", review_comment_id),
            )
            if subject[1] is not None
        ]
        with self.state.lock:
            return [
                r
                for r in self.state.reactions
                if r.repo.lower() == full_name.lower() and (not wanted or r.subject in wanted)
            ]

    def reaction_latency_ms(self, delivery: Delivery, content: str = "eyes") -> float | None:
        """Milliseconds from the start of ``delivery``'s POST to the first ``content`` reaction
        on what it was about (the comment, review comment, issue or PR); None if none yet."""
        with self.state.lock:
            sent = next(
                (w for w in self.state.webhooks if w.delivery.delivery_id == delivery.delivery_id),
                None,
            )
            if sent is None or "repository" not in sent.payload:
                return None
            subject = reaction_subject(sent.delivery.event, sent.payload)
            full_name = sent.payload["repository"]["full_name"]
            times = [
                r.monotonic_ms
                for r in self.state.reactions
                if r.subject == subject
                and r.content == content
                and r.repo.lower() == full_name.lower()
            ]
        if not times:
            return None
        return min(times) - delivery.started_monotonic_ms

    def review_comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        """A PR's inline review comments and replies (REST shape), oldest first."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            return [
                self.render_review_comment(repo, c) for c in self.review_comments_on(repo, number)
            ]

    def reviews(self, full_name: str, number: int) -> list[dict[str, Any]]:
        """A PR's reviews (REST shape: ``state`` upper case), oldest first."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            return [self.render_review(repo, r) for r in self.reviews_on(repo, number)]

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

    def review_comments_on(self, repo: Repo, number: int) -> list[ReviewComment]:
        return [
            c
            for c in self.state.review_comments.values()
            if c.repo.lower() == repo.full_name.lower() and c.pull_number == number
        ]

    def reviews_on(self, repo: Repo, number: int) -> list[Review]:
        return [
            r
            for r in self.state.reviews.values()
            if r.repo.lower() == repo.full_name.lower() and r.pull_number == number
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

    def render_installation(self, installation_id: int) -> dict[str, Any]:
        installation = self.state.installations[installation_id]
        return payloads.installation_json(
            self.urls, self.app, installation, self.state.users[installation.account]
        )

    def render_check_run(self, repo: Repo, run: CheckRun) -> dict[str, Any]:
        owner = self.state.users[self.app.owner]
        app = (
            payloads.app_json(self.urls, self.app, owner)
            if run.ci_app is None
            else payloads.ci_app_json(self.urls, run.ci_app, owner)
        )
        return payloads.check_run_json(self.urls, repo, run, app)

    def check_runs(self, full_name: str, ref: str) -> list[dict[str, Any]]:
        """The check runs on a commit (a sha or a branch), oldest first, in REST shape."""
        with self.state.lock:
            repo = self.require_repo(full_name)
            sha = git_http.ref_sha(repo.bare_path, ref)
            return [
                self.render_check_run(repo, run)
                for run in self.state.check_runs.values()
                if run.repo == repo.full_name and run.head_sha == sha
            ]

    def render_review(self, repo: Repo, review: Review) -> dict[str, Any]:
        return payloads.review_json(
            self.urls, repo, review, user=self.state.users[review.user], rest=True
        )

    def render_review_comment(self, repo: Repo, comment: ReviewComment) -> dict[str, Any]:
        return payloads.review_comment_json(
            self.urls,
            repo,
            comment,
            user=self.state.users[comment.user],
            reactions=self.reactions_on(("review_comment", comment.id), repo),
        )

    def head_repo(self, issue: Issue) -> Repo:
        assert issue.pull is not None
        return self.require_repo(issue.pull.head_repo)

    def pull_head_sha(self, repo: Repo, issue: Issue) -> str:
        """An open PR follows its head branch (in the head repo, maybe a fork), as on GitHub; a
        closed one keeps its last sha. The base repo keeps ``refs/pull/N/head`` on it, with the
        commits, so the PR can be fetched from the base repository even from a fork."""
        assert issue.pull is not None
        pull = issue.pull
        if issue.state == "open":
            head_repo = self.head_repo(issue)
            current = git_http.ref_sha(head_repo.bare_path, f"refs/heads/{pull.head_ref}")
            if current and current != pull.head_sha:
                pull.head_sha = current
                self.sync_pull_ref(repo, issue)
        return pull.head_sha

    def sync_pull_ref(self, repo: Repo, issue: Issue) -> None:
        assert issue.pull is not None
        pull_ref = f"refs/pull/{issue.number}/head"
        head_repo = self.head_repo(issue)
        if head_repo is repo:
            git_http.update_ref(repo.bare_path, pull_ref, issue.pull.head_sha)
        else:
            git_http.fetch_ref(
                repo.bare_path, head_repo.bare_path, f"refs/heads/{issue.pull.head_ref}", pull_ref
            )

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
            head_repo=self.head_repo(issue),
            users=self.state.users,
            comments=len(self.comments_on(repo, issue.number)),
            review_comments=len(self.review_comments_on(repo, issue.number)),
            commits=commits,
            simple=simple,
        )


def reaction_subject(event: str, payload: dict[str, Any]) -> tuple[str, int] | None:
    """What a webhook is about, as a reaction subject (where the bot's 👀 goes)."""
    if event == "issue_comment":
        return ("comment", int(payload["comment"]["id"]))
    if event == "pull_request_review_comment":
        return ("review_comment", int(payload["comment"]["id"]))
    if event == "issues":
        return ("issue", int(payload["issue"]["number"]))
    if event == "pull_request_review":
        return ("issue", int(payload["pull_request"]["number"]))
    return None


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
