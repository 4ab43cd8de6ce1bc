"""The simulator's HTTP face: GitHub's REST API under ``/api/v3``, git smart HTTP at the root,
and thin admin endpoints under ``/_sim`` for seeding from another process.

Handlers use ``GitHubSim`` (reached through ``current_app.extensions``) for state and rendering,
and answer errors the way GitHub does: a JSON body with ``message`` and ``documentation_url``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jwt
import structlog
from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from sim.github import git_http, payloads
from sim.github.state import (
    PERMISSIONS,
    REACTIONS,
    CheckRun,
    Delivery,
    Issue,
    Pull,
    Push,
    Reaction,
    RecordedRequest,
    Repo,
    Review,
    ReviewComment,
    SimError,
    utcnow,
)

if TYPE_CHECKING:
    from sim.github.simulator import GitHubSim

log = structlog.get_logger("sim.github")

API_PREFIX = "/api/v3"
JWT_MAX_LIFETIME_SECONDS = 600
JWT_CLOCK_SKEW_SECONDS = 60
RATE_LIMIT = 5000
DELIVERY_CURSOR = re.compile(r"^v1_(\d+)$")
GIT_SERVICES = ("git-upload-pack", "git-receive-pack")


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: list[Any] | None = None):
        super().__init__(message)
        self.status = status
        self.body = payloads.error_json(message, errors)


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


def validation_failed(*errors: dict[str, Any]) -> ApiError:
    return ApiError(422, "Validation Failed", list(errors))


def sim() -> GitHubSim:
    return current_app.extensions["github_sim"]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json; charset=utf-8")


def create_app(github_sim: GitHubSim) -> Flask:
    app = Flask("sim.github")
    app.extensions["github_sim"] = github_sim
    app.register_blueprint(api_blueprint(), url_prefix=API_PREFIX)
    app.register_blueprint(git_blueprint())
    app.register_blueprint(web_blueprint())
    app.register_blueprint(admin_blueprint(), url_prefix="/_sim")
    app.register_error_handler(ApiError, lambda error: json_response(error.body, error.status))
    app.register_error_handler(HTTPException, answer_http_exception)
    app.register_error_handler(
        SimError, lambda error: json_response(payloads.error_json(str(error)), 422)
    )
    app.register_error_handler(
        KeyError, lambda error: json_response(payloads.error_json(f"missing field {error}"), 400)
    )
    app.after_request(add_github_headers)
    app.after_request(record_request)
    return app


def answer_http_exception(error: HTTPException) -> Response:
    message = "Not Found" if error.code == 404 else (error.description or error.name)
    return json_response(payloads.error_json(message), error.code or 500)


def add_github_headers(response: Response) -> Response:
    if not request.path.startswith(API_PREFIX):
        return response
    with sim().state.lock:
        sim().state.api_calls += 1
        used = sim().state.api_calls
    response.headers["X-GitHub-Request-Id"] = uuid.uuid4().hex[:20].upper()
    response.headers["X-GitHub-Media-Type"] = "github.v3; format=json"
    response.headers["X-RateLimit-Limit"] = str(RATE_LIMIT)
    response.headers["X-RateLimit-Remaining"] = str(max(RATE_LIMIT - used, 0))
    response.headers["X-RateLimit-Used"] = str(used)
    response.headers["X-RateLimit-Reset"] = str(int(time.time()) + 3600)
    response.headers["X-RateLimit-Resource"] = "core"
    return response


def record_request(response: Response) -> Response:
    request_json = request.get_json(silent=True) if request.is_json else None
    response_json = None
    if response.mimetype == "application/json" and not response.is_streamed:
        response_json = json.loads(response.get_data(as_text=True) or "null")
    headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    entry = RecordedRequest(
        method=request.method,
        path=request.path,
        query=request.query_string.decode("latin-1"),
        status=response.status_code,
        request_json=request_json,
        response_json=response_json,
        headers=headers,
    )
    with sim().state.lock:
        sim().state.requests.append(entry)
    return response


# ---- authentication ------------------------------------------------------------------------------


def verify_app_jwt() -> None:
    """Accept only a fresh RS256 JWT signed by the app's key, as GitHub does for ``/app`` calls."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential:
        raise ApiError(401, "A JSON web token could not be decoded")
    try:
        claims = jwt.decode(
            credential,
            sim().app_public_key_pem,
            algorithms=["RS256"],
            options={"require": ["iat", "exp", "iss"], "verify_iat": False},
            leeway=JWT_CLOCK_SKEW_SECONDS,
        )
    except jwt.ExpiredSignatureError as error:
        raise ApiError(
            401,
            "'Expiration time' claim ('exp') must be a numeric value representing the future "
            "time at which the assertion expires",
        ) from error
    except jwt.PyJWTError as error:
        raise ApiError(401, "A JSON web token could not be decoded") from error
    now = time.time()
    if float(claims["exp"]) > now + JWT_MAX_LIFETIME_SECONDS + JWT_CLOCK_SKEW_SECONDS:
        raise ApiError(401, "'Expiration time' claim ('exp') is too far in the future")
    if float(claims["iat"]) > now + JWT_CLOCK_SKEW_SECONDS:
        raise ApiError(
            401,
            "'Issued at' claim ('iat') must be an Integer representing the time that the "
            "assertion was issued",
        )
    if str(claims["iss"]) != str(sim().app.id):
        raise ApiError(401, "'Issuer' claim ('iss') must be an Integer")


def verify_installation_token() -> None:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if not credential:
        raise ApiError(401, "Requires authentication")
    if scheme.lower() not in ("token", "bearer"):
        raise ApiError(401, "Bad credentials")
    token = sim().state.valid_token(credential.strip())
    if token is None:
        raise ApiError(401, "Bad credentials")
    g.installation_id = token.installation_id


def uses_app_jwt(path: str) -> bool:
    parts = path.strip("/").split("/")
    return parts[0] == "app" or (
        len(parts) == 4 and parts[0] == "repos" and parts[3] == "installation"
    )


def authenticate_api_request() -> None:
    path = request.path[len(API_PREFIX) :]
    if path.startswith("/app-manifests/"):
        return  # the conversion is unauthenticated: the one-hour code is the credential
    if uses_app_jwt(path):
        verify_app_jwt()
    else:
        verify_installation_token()


def repo_for_request(owner: str, name: str) -> Repo:
    """The repository, if the caller's installation covers it; 404 otherwise (like GitHub).

    A public repository outside the installation (someone's fork) can be read, not written:
    GitHub answers 403 "Resource not accessible by integration" to a write."""
    repo = sim().state.repo(f"{owner}/{name}")
    installation = getattr(g, "installation_id", None)
    if repo is None:
        raise not_found()
    if installation is not None and repo.installation_id != installation:
        if repo.private:
            raise not_found()
        if request.method not in ("GET", "HEAD"):
            raise ApiError(403, "Resource not accessible by integration")
    return repo


def issue_for_request(repo: Repo, number: int) -> Issue:
    issue = sim().state.issue(repo.full_name, number)
    if issue is None:
        raise not_found()
    return issue


def pull_for_request(repo: Repo, number: int) -> Issue:
    issue = issue_for_request(repo, number)
    if issue.pull is None:
        raise not_found()
    return issue


def review_comment_for_request(repo: Repo, comment_id: int) -> ReviewComment:
    comment = sim().state.review_comments.get(comment_id)
    if comment is None or comment.repo.lower() != repo.full_name.lower():
        raise not_found()
    return comment


def review_for_request(repo: Repo, number: int, review_id: int) -> Review:
    review = sim().state.reviews.get(review_id)
    if (
        review is None
        or review.repo.lower() != repo.full_name.lower()
        or review.pull_number != number
    ):
        raise not_found()
    return review


def request_object() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "Problems parsing JSON")
    return body


def per_page_arg() -> int:
    try:
        return min(max(int(request.args.get("per_page", 30)), 1), 100)
    except ValueError as error:
        raise ApiError(400, "Invalid pagination parameters") from error


def paginated(items: list[Any]) -> Response:
    """One page of ``items`` with a GitHub-style ``Link`` header (``page``/``per_page`` args)."""
    per_page = per_page_arg()
    try:
        page = max(int(request.args.get("page", 1)), 1)
    except ValueError as error:
        raise ApiError(400, "Invalid pagination parameters") from error
    last = max(math.ceil(len(items) / per_page), 1)
    response = json_response(items[(page - 1) * per_page : page * per_page])

    def page_url(number: int) -> str:
        args = {**request.args.to_dict(), "page": str(number), "per_page": str(per_page)}
        return f"{request.base_url}?{urlencode(args)}"

    links = []
    if page < last:
        links += [f'<{page_url(page + 1)}>; rel="next"', f'<{page_url(last)}>; rel="last"']
    if page > 1:
        links += [f'<{page_url(1)}>; rel="first"', f'<{page_url(page - 1)}>; rel="prev"']
    if links:
        response.headers["Link"] = ", ".join(links)
    return response


# ---- REST API ------------------------------------------------------------------------------------


def api_blueprint() -> Blueprint:
    bp = Blueprint("api", __name__)
    bp.before_request(authenticate_api_request)

    @bp.get("/app")
    def get_app() -> Response:
        s = sim()
        return json_response(payloads.app_json(s.urls, s.app, s.state.users[s.app.owner]))

    @bp.post("/app-manifests/<code>/conversions")
    def create_app_from_manifest(code: str) -> Response:
        converted = sim().convert_manifest(code)
        if converted is None:
            raise not_found()
        log.info("github_sim.app_created", app_id=converted["id"])
        return json_response(converted, 201)

    @bp.get("/app/installations")
    def list_installations() -> Response:
        s = sim()
        with s.state.lock:
            items = [
                payloads.installation_json(s.urls, s.app, inst, s.state.users[inst.account])
                for inst in s.state.installations.values()
            ]
        return paginated(items)

    @bp.get("/app/hook/deliveries")
    def list_hook_deliveries() -> Response:
        """Newest first, paged by ``cursor`` (the id to start from) with a ``Link`` header."""
        per_page = per_page_arg()
        wanted = request.args.get("status")
        if wanted not in (None, "success", "failure"):
            raise validation_failed(
                {"resource": "HookDelivery", "field": "status", "code": "invalid"}
            )
        with sim().state.lock:
            sent = sorted(sim().state.webhooks, key=lambda w: w.delivery.id, reverse=True)
        if wanted is not None:
            sent = [
                w for w in sent if (200 <= w.delivery.status_code < 300) == (wanted == "success")
            ]
        cursor = request.args.get("cursor")
        if cursor is not None:
            start = DELIVERY_CURSOR.match(cursor)
            if start is None:
                raise ApiError(400, "Invalid cursor")
            sent = [w for w in sent if w.delivery.id <= int(start.group(1))]
        response = json_response([payloads.hook_delivery_json(w) for w in sent[:per_page]])
        if len(sent) > per_page:
            args = {**request.args.to_dict(), "per_page": str(per_page)}
            args["cursor"] = f"v1_{sent[per_page].delivery.id}"
            response.headers["Link"] = f'<{request.base_url}?{urlencode(args)}>; rel="next"'
        return response

    @bp.post("/app/hook/deliveries/<int:delivery_id>/attempts")
    def redeliver_hook_delivery(delivery_id: int) -> Response:
        try:
            sim().redeliver(delivery_id)
        except SimError as error:
            raise not_found() from error
        return json_response({}, 202)

    @bp.post("/app/installations/<int:installation_id>/access_tokens")
    def create_installation_token(installation_id: int) -> Response:
        s = sim()
        if installation_id not in s.state.installations:
            raise not_found()
        token = s.state.mint_token(installation_id, s.token_ttl)
        log.info("github_sim.token_minted", installation_id=installation_id)
        return json_response(payloads.installation_token_json(token.value, token.expires_at), 201)

    @bp.get("/repos/<owner>/<name>/installation")
    def get_repo_installation(owner: str, name: str) -> Response:
        s = sim()
        repo = repo_for_request(owner, name)
        inst = s.state.installations[repo.installation_id]
        return json_response(
            payloads.installation_json(s.urls, s.app, inst, s.state.users[inst.account])
        )

    @bp.get("/repos/<owner>/<name>")
    def get_repo(owner: str, name: str) -> Response:
        with sim().state.lock:
            return json_response(sim().render_repo(repo_for_request(owner, name)))

    @bp.get("/repos/<owner>/<name>/issues/<int:number>")
    def get_issue(owner: str, name: str, number: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            return json_response(s.render_issue(repo, issue_for_request(repo, number)))

    @bp.get("/repos/<owner>/<name>/issues/<int:number>/comments")
    def list_issue_comments(owner: str, name: str, number: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            issue_for_request(repo, number)
            items = [s.render_comment(repo, c) for c in s.comments_on(repo, number)]
        return paginated(items)

    @bp.post("/repos/<owner>/<name>/issues/<int:number>/comments")
    def create_issue_comment(owner: str, name: str, number: int) -> Response:
        s = sim()
        body = request_object().get("body")
        if not isinstance(body, str) or not body:
            raise validation_failed(
                {"resource": "IssueComment", "field": "body", "code": "missing_field"}
            )
        with s.state.lock:
            repo = repo_for_request(owner, name)
            issue = issue_for_request(repo, number)
            comment = s.new_comment(repo, number, body, s.bot_login, via_app=True)
            issue.updated_at = comment.created_at
            rendered = s.render_comment(repo, comment)
            echo = payloads.webhook_issue_comment(
                "created",
                issue=s.render_issue(repo, issue),
                comment=rendered,
                repository=s.render_repo(repo),
                sender=s.render_user(s.bot_login),
                installation_id=repo.installation_id,
            )
        log.info(
            "github_sim.comment_created", repo=repo.full_name, number=number, comment_id=comment.id
        )
        s.echo("issue_comment", echo)
        response = json_response(rendered, 201)
        response.headers["Location"] = rendered["url"]
        return response

    @bp.get("/repos/<owner>/<name>/issues/comments/<int:comment_id>")
    def get_issue_comment(owner: str, name: str, comment_id: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            comment = s.state.comments.get(comment_id)
            if comment is None or comment.repo.lower() != repo.full_name.lower():
                raise not_found()
            return json_response(s.render_comment(repo, comment))

    @bp.patch("/repos/<owner>/<name>/issues/comments/<int:comment_id>")
    def update_issue_comment(owner: str, name: str, comment_id: int) -> Response:
        s = sim()
        body = request_object().get("body")
        if not isinstance(body, str) or not body:
            raise validation_failed(
                {"resource": "IssueComment", "field": "body", "code": "missing_field"}
            )
        with s.state.lock:
            repo = repo_for_request(owner, name)
            comment = s.state.comments.get(comment_id)
            if comment is None or comment.repo.lower() != repo.full_name.lower():
                raise not_found()
            previous, comment.body = comment.body, body
            comment.updated_at = utcnow()
            rendered = s.render_comment(repo, comment)
            echo = payloads.webhook_issue_comment(
                "edited",
                issue=s.render_issue(repo, issue_for_request(repo, comment.issue_number)),
                comment=rendered,
                repository=s.render_repo(repo),
                sender=s.render_user(s.bot_login),
                installation_id=repo.installation_id,
                previous_body=previous,
            )
        if previous != body:
            s.echo("issue_comment", echo)
        return json_response(rendered)

    @bp.get("/repos/<owner>/<name>/issues/<int:number>/labels")
    def list_issue_labels(owner: str, name: str, number: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            issue = issue_for_request(repo, number)
            items = [
                payloads.label_json(s.urls, repo, repo.labels[n.lower()]) for n in issue.labels
            ]
        return paginated(items)

    @bp.post("/repos/<owner>/<name>/issues/<int:number>/labels")
    def add_issue_labels(owner: str, name: str, number: int) -> Response:
        s = sim()
        body = request.get_json(silent=True)
        names = body.get("labels") if isinstance(body, dict) else body
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise validation_failed({"resource": "Label", "field": "labels", "code": "invalid"})
        with s.state.lock:
            repo = repo_for_request(owner, name)
            issue = issue_for_request(repo, number)
            for label_name in names:
                label = s.state.ensure_label(repo, label_name)
                if label.name.lower() not in (n.lower() for n in issue.labels):
                    issue.labels.append(label.name)
            issue.updated_at = utcnow()
            items = [
                payloads.label_json(s.urls, repo, repo.labels[n.lower()]) for n in issue.labels
            ]
        return json_response(items)

    def react(repo: Repo, subject: tuple[str, int]) -> Response:
        s = sim()
        content = request_object().get("content")
        if content not in REACTIONS:
            raise validation_failed({"resource": "Reaction", "field": "content", "code": "invalid"})
        with s.state.lock:
            for existing in s.reactions_on(subject, repo):
                if existing.user == s.bot_login and existing.content == content:
                    return json_response(
                        payloads.reaction_json(s.urls, existing, s.state.users[existing.user])
                    )
            reaction = Reaction(
                id=s.state.next_id(),
                user=s.bot_login,
                content=content,
                created_at=utcnow(),
                subject=subject,
                repo=repo.full_name,
            )
            s.state.reactions.append(reaction)
            return json_response(
                payloads.reaction_json(s.urls, reaction, s.state.users[s.bot_login]), 201
            )

    def list_reactions(repo: Repo, subject: tuple[str, int]) -> Response:
        s = sim()
        content = request.args.get("content")
        if content is not None and content not in REACTIONS:
            raise validation_failed({"resource": "Reaction", "field": "content", "code": "invalid"})
        items = [
            payloads.reaction_json(s.urls, r, s.state.users[r.user])
            for r in s.reactions_on(subject, repo)
            if content is None or r.content == content
        ]
        return paginated(items)

    def issue_comment_for_request(repo: Repo, comment_id: int) -> None:
        comment = sim().state.comments.get(comment_id)
        if comment is None or comment.repo.lower() != repo.full_name.lower():
            raise not_found()

    # One pair of routes (list, create) per kind of thing a reaction can be on.
    reaction_subjects = (
        ("issues/<int:key>", "issue", issue_for_request),
        ("issues/comments/<int:key>", "comment", issue_comment_for_request),
        ("pulls/comments/<int:key>", "review_comment", review_comment_for_request),
    )
    for path, kind, check in reaction_subjects:

        def reactions(
            owner: str,
            name: str,
            key: int,
            kind: str = kind,
            check: Callable[[Repo, int], object] = check,
        ) -> Response:
            with sim().state.lock:
                repo = repo_for_request(owner, name)
                check(repo, key)
                if request.method == "POST":
                    return react(repo, (kind, key))
                return list_reactions(repo, (kind, key))

        bp.add_url_rule(
            f"/repos/<owner>/<name>/{path}/reactions",
            endpoint=f"{kind}_reactions",
            view_func=reactions,
            methods=["GET", "POST"],
        )

    @bp.get("/repos/<owner>/<name>/pulls")
    def list_pulls(owner: str, name: str) -> Response:
        s = sim()
        wanted_state = request.args.get("state", "open")
        head = request.args.get("head")
        if head is not None and ":" not in head:
            head = None  # GitHub ignores a head filter without its "owner:" part
        base = request.args.get("base")
        with s.state.lock:
            repo = repo_for_request(owner, name)
            items = [
                s.render_pull(repo, issue, simple=True)
                for issue in sorted(
                    s.state.issues[repo.full_name.lower()].values(), key=lambda i: -i.number
                )
                if issue.pull is not None
                and wanted_state in ("all", issue.state)
                and (head is None or same_label(pull_label(s, issue), head))
                and (base is None or issue.pull.base_ref == base)
            ]
        return paginated(items)

    @bp.post("/repos/<owner>/<name>/pulls")
    def create_pull(owner: str, name: str) -> Response:
        s = sim()
        body = request_object()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            issue = open_pull_request(s, repo, body, user=s.bot_login)
            rendered = s.render_pull(repo, issue)
        log.info("github_sim.pull_created", repo=repo.full_name, number=issue.number)
        response = json_response(rendered, 201)
        response.headers["Location"] = rendered["url"]
        return response

    @bp.get("/repos/<owner>/<name>/pulls/<int:number>")
    def get_pull(owner: str, name: str, number: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            return json_response(s.render_pull(repo, pull_for_request(repo, number)))

    @bp.patch("/repos/<owner>/<name>/pulls/<int:number>")
    def update_pull(owner: str, name: str, number: int) -> Response:
        s = sim()
        body = request_object()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            issue = pull_for_request(repo, number)
            apply_pull_update(s, repo, issue, body)
            return json_response(s.render_pull(repo, issue))

    @bp.get("/repos/<owner>/<name>/pulls/<int:number>/commits")
    def list_pull_commits(owner: str, name: str, number: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            issue = pull_for_request(repo, number)
            assert issue.pull is not None
            head = s.pull_head_sha(repo, issue)
            commits = git_http.log(repo.bare_path, f"{issue.pull.base_sha}..{head}")
            # GitHub lists a pull request's commits oldest first.
            items = [
                payloads.commit_json(s.urls, repo, c, s.state.users) for c in reversed(commits)
            ]
        return paginated(items)

    @bp.post("/repos/<owner>/<name>/pulls/<int:number>/requested_reviewers")
    def request_reviewers(owner: str, name: str, number: int) -> Response:
        s = sim()
        body = request_object()
        reviewers = body.get("reviewers") or []
        with s.state.lock:
            repo = repo_for_request(owner, name)
            issue = pull_for_request(repo, number)
            assert issue.pull is not None
            if any(repo.permissions.get(r, "none") == "none" for r in reviewers):
                raise ApiError(
                    422,
                    "Reviews may only be requested from collaborators. One or more of the users "
                    "or teams you specified is not a collaborator of the "
                    f"{repo.full_name} repository.",
                )
            for reviewer in reviewers:
                if reviewer not in issue.pull.requested_reviewers:
                    issue.pull.requested_reviewers.append(reviewer)
            return json_response(s.render_pull(repo, issue, simple=True), 201)

    @bp.get("/repos/<owner>/<name>/pulls/<int:number>/comments")
    def list_review_comments(owner: str, name: str, number: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            pull_for_request(repo, number)
            items = [s.render_review_comment(repo, c) for c in s.review_comments_on(repo, number)]
        return paginated(items)

    @bp.get("/repos/<owner>/<name>/pulls/comments/<int:comment_id>")
    def get_review_comment(owner: str, name: str, comment_id: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            return json_response(
                s.render_review_comment(repo, review_comment_for_request(repo, comment_id))
            )

    @bp.post("/repos/<owner>/<name>/pulls/<int:number>/comments/<int:comment_id>/replies")
    def reply_to_review_comment(owner: str, name: str, number: int, comment_id: int) -> Response:
        s = sim()
        body = request_object().get("body")
        if not isinstance(body, str) or not body:
            raise validation_failed(
                {"resource": "PullRequestReviewComment", "field": "body", "code": "missing_field"}
            )
        with s.state.lock:
            repo = repo_for_request(owner, name)
            issue = pull_for_request(repo, number)
            target = review_comment_for_request(repo, comment_id)
            if target.pull_number != number:
                raise not_found()
            # A reply through the API is a review of its own, as GitHub records it.
            review = s.new_review(repo, issue, s.bot_login, None, "commented", via_app=True)
            reply = s.new_reply(repo, issue, review, comment_id, user=s.bot_login, body=body)
            rendered = s.render_review_comment(repo, reply)
            echoes = s.review_events(repo, issue, review, [reply])
        log.info("github_sim.review_reply", repo=repo.full_name, number=number, reply_id=reply.id)
        for event, payload in echoes:
            s.echo(event, payload)
        response = json_response(rendered, 201)
        response.headers["Location"] = rendered["url"]
        return response

    @bp.get("/repos/<owner>/<name>/pulls/<int:number>/reviews")
    def list_reviews(owner: str, name: str, number: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            pull_for_request(repo, number)
            items = [s.render_review(repo, r) for r in s.reviews_on(repo, number)]
        return paginated(items)

    @bp.post("/repos/<owner>/<name>/pulls/<int:number>/reviews")
    def create_review(owner: str, name: str, number: int) -> Response:
        """A review by the App, submitted at once (`event` given) with its inline comments;
        422 for a comment on a line outside the diff, as GitHub answers."""
        s = sim()
        body = request_object()
        event = body.get("event")
        states = {
            "COMMENT": "commented",
            "APPROVE": "approved",
            "REQUEST_CHANGES": "changes_requested",
        }
        if event not in states:
            raise validation_failed(
                {"resource": "PullRequestReview", "field": "event", "code": "invalid"}
            )
        comments = body.get("comments") or []
        if not isinstance(comments, list) or not all(isinstance(c, dict) for c in comments):
            raise validation_failed(
                {"resource": "PullRequestReview", "field": "comments", "code": "invalid"}
            )
        with s.state.lock:
            repo = repo_for_request(owner, name)
            issue = pull_for_request(repo, number)
            text = body.get("body")
            review = s.new_review(
                repo, issue, s.bot_login, text if isinstance(text, str) else None,
                states[event], via_app=True,
            )  # fmt: skip
            try:
                threads = [
                    s.new_review_comment(
                        repo,
                        issue,
                        review,
                        user=s.bot_login,
                        body=str(c.get("body") or ""),
                        path=str(c.get("path") or ""),
                        line=int(c.get("line") or 0),
                        side=str(c.get("side") or "RIGHT"),
                    )
                    for c in comments
                ]
            except SimError as error:
                del s.state.reviews[review.id]  # GitHub creates nothing when one line is wrong
                log.info("github_sim.review_refused", reason=str(error))
                raise ApiError(
                    422, "Unprocessable Entity", ["Line could not be resolved"]
                ) from None
            rendered = s.render_review(repo, review)
            echoes = s.review_events(repo, issue, review, threads)
        log.info("github_sim.review", repo=repo.full_name, number=number, comments=len(threads))
        for event_name, payload in echoes:
            s.echo(event_name, payload)
        return json_response(rendered)

    @bp.get("/repos/<owner>/<name>/pulls/<int:number>/reviews/<int:review_id>")
    def get_review(owner: str, name: str, number: int, review_id: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            pull_for_request(repo, number)
            return json_response(s.render_review(repo, review_for_request(repo, number, review_id)))

    @bp.get("/repos/<owner>/<name>/pulls/<int:number>/reviews/<int:review_id>/comments")
    def list_review_comments_of_review(
        owner: str, name: str, number: int, review_id: int
    ) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            pull_for_request(repo, number)
            review_for_request(repo, number, review_id)
            items = [
                s.render_review_comment(repo, c)
                for c in s.review_comments_on(repo, number)
                if c.review_id == review_id
            ]
        return paginated(items)

    @bp.get("/repos/<owner>/<name>/contents/<path:path>")
    def get_file_contents(owner: str, name: str, path: str) -> Response:
        """A file's content (base64) at `ref` (default: the default branch); files only."""
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            ref = request.args.get("ref") or repo.default_branch
            found = git_http.blob_at(repo.bare_path, ref, path)
        if found is None:
            raise not_found()
        sha, data = found
        return json_response(payloads.file_contents_json(s.urls, repo, path, sha, data))

    @bp.post("/repos/<owner>/<name>/check-runs")
    def create_check_run(owner: str, name: str) -> Response:
        s = sim()
        body = request_object()
        for field in ("name", "head_sha"):
            if not isinstance(body.get(field), str) or not body[field]:
                raise validation_failed(
                    {"resource": "CheckRun", "field": field, "code": "missing_field"}
                )
        with s.state.lock:
            repo = repo_for_request(owner, name)
            if git_http.ref_sha(repo.bare_path, body["head_sha"]) != body["head_sha"]:
                raise validation_failed(
                    {"resource": "CheckRun", "field": "head_sha", "code": "invalid"}
                )
            run = CheckRun(
                id=s.state.next_id(),
                repo=repo.full_name,
                head_sha=body["head_sha"],
                name=body["name"],
                status="queued",
                conclusion=None,
                started_at=utcnow(),
            )
            change_check_run(run, body)
            s.state.check_runs[run.id] = run
            rendered = s.render_check_run(repo, run)
        log.info("github_sim.check_run", repo=repo.full_name, id=run.id, status=run.status)
        return json_response(rendered, 201)

    @bp.patch("/repos/<owner>/<name>/check-runs/<int:check_run_id>")
    def update_check_run(owner: str, name: str, check_run_id: int) -> Response:
        s = sim()
        body = request_object()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            run = s.state.check_runs.get(check_run_id)
            if run is None or run.repo != repo.full_name:
                raise not_found()
            change_check_run(run, body)
            rendered = s.render_check_run(repo, run)
        log.info("github_sim.check_run", repo=repo.full_name, id=run.id, status=run.status)
        return json_response(rendered)

    @bp.get("/repos/<owner>/<name>/commits/<path:ref>/check-runs")
    def list_check_runs_for_ref(owner: str, name: str, ref: str) -> Response:
        s = sim()
        with s.state.lock:
            runs = s.check_runs(repo_for_request(owner, name).full_name, ref)
        return json_response({"total_count": len(runs), "check_runs": runs[::-1]})

    @bp.get("/repos/<owner>/<name>/check-suites/<int:suite_id>/check-runs")
    def list_check_runs_in_suite(owner: str, name: str, suite_id: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            runs = [
                s.render_check_run(repo, run)
                for run in s.state.check_runs.values()
                if run.repo == repo.full_name and run.suite_id == suite_id
            ]
        return json_response({"total_count": len(runs), "check_runs": runs})

    @bp.get("/repos/<owner>/<name>/actions/runs/<int:run_id>/jobs")
    def list_jobs_for_workflow_run(owner: str, name: str, run_id: int) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            run = s.state.workflow_runs.get(run_id)
            if run is None or run.repo != repo.full_name:
                raise not_found()
            jobs = [payloads.job_json(s.urls, repo, run, job) for job in run.jobs]
        return json_response({"total_count": len(jobs), "jobs": jobs})

    @bp.get("/repos/<owner>/<name>/actions/jobs/<int:job_id>/logs")
    def download_job_logs(owner: str, name: str, job_id: int) -> Response:
        """A redirect to the log's text, as GitHub answers (the client follows it without the
        token, which the other host does not take)."""
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            found = s.find_job(job_id)
            if found is None or found[0].repo != repo.full_name:
                raise not_found()
        return Response(status=302, headers={"Location": f"{s.url}/_sim/job-logs/{job_id}"})

    @bp.get("/repos/<owner>/<name>/branches/<path:branch>")
    def get_branch(owner: str, name: str, branch: str) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            sha = git_http.ref_sha(repo.bare_path, f"refs/heads/{branch}")
            if sha is None:
                raise ApiError(404, "Branch not found")
            head = git_http.log(repo.bare_path, sha, max_count=1)[0]
            commit = payloads.commit_json(s.urls, repo, head, s.state.users)
            return json_response(payloads.branch_json(s.urls, repo, branch, commit))

    @bp.get("/repos/<owner>/<name>/git/ref/<path:ref>")
    def get_git_ref(owner: str, name: str, ref: str) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            sha = (
                git_http.ref_sha(repo.bare_path, f"refs/{ref}")
                if ref.startswith(("heads/", "tags/"))
                else None
            )
            if sha is None:
                raise not_found()
            return json_response(payloads.git_ref_json(s.urls, repo, f"refs/{ref}", sha))

    @bp.get("/repos/<owner>/<name>/commits")
    def list_commits(owner: str, name: str) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            if not git_http.list_refs(repo.bare_path):
                raise ApiError(409, "Git Repository is empty.")
            revision = request.args.get("sha") or repo.default_branch
            if git_http.ref_sha(repo.bare_path, revision) is None:
                raise not_found()
            commits = git_http.log(repo.bare_path, revision)
            items = [payloads.commit_json(s.urls, repo, c, s.state.users) for c in commits]
        return paginated(items)

    @bp.get("/repos/<owner>/<name>/collaborators/<username>/permission")
    def get_collaborator_permission(owner: str, name: str, username: str) -> Response:
        s = sim()
        with s.state.lock:
            repo = repo_for_request(owner, name)
            user = s.state.users.get(username)
            if user is None:
                raise ApiError(404, f"{username} is not a user")
            # Anyone may read a public repository: GitHub reports "read" for a non-collaborator
            # there, and "none" on a private one.
            role = repo.permissions.get(username, "none" if repo.private else "read")
            return json_response(payloads.collaborator_permission_json(s.urls, user, role))

    return bp


def same_label(label: str, wanted: str) -> bool:
    """``owner:branch`` labels: owners compare without case (as logins do), branches exactly."""
    owner, _, ref = label.partition(":")
    wanted_owner, _, wanted_ref = wanted.partition(":")
    return owner.lower() == wanted_owner.lower() and ref == wanted_ref


def pull_label(s: GitHubSim, issue: Issue) -> str:
    assert issue.pull is not None
    return f"{s.head_repo(issue).owner}:{issue.pull.head_ref}"


CHECK_STATUSES = ("queued", "in_progress", "completed")
CHECK_CONCLUSIONS = (
    "success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required"
)  # fmt: skip


def change_check_run(run: CheckRun, body: dict[str, Any]) -> None:
    """Apply a create or update request to a check run, refused as GitHub refuses it."""
    status = body.get("status", run.status)
    conclusion = body.get("conclusion", run.conclusion)
    if conclusion is not None and "status" not in body:
        status = "completed"  # GitHub completes a run given a conclusion
    if status not in CHECK_STATUSES:
        raise validation_failed({"resource": "CheckRun", "field": "status", "code": "invalid"})
    if status == "completed" and conclusion not in CHECK_CONCLUSIONS:
        raise validation_failed({"resource": "CheckRun", "field": "conclusion", "code": "invalid"})
    output = body.get("output")
    if isinstance(output, dict):
        if not isinstance(output.get("title"), str) or not isinstance(output.get("summary"), str):
            raise validation_failed({"resource": "CheckRun", "field": "output", "code": "invalid"})
        run.title, run.summary = output["title"], output["summary"]
        run.text = output.get("text") if isinstance(output.get("text"), str) else run.text
    for field in ("details_url", "external_id", "name"):
        if isinstance(body.get(field), str):
            setattr(run, field, body[field])
    run.status = status
    run.conclusion = conclusion if status == "completed" else None
    if status == "completed" and run.completed_at is None:
        run.completed_at = utcnow()


def open_pull_request(s: GitHubSim, repo: Repo, body: dict[str, Any], *, user: str) -> Issue:
    """Validate a create-PR request like GitHub does, then record the PR (caller holds the lock).

    ``head`` is ``branch`` (in ``repo``) or ``owner:branch``, where ``owner`` is ``repo``'s
    owner or the owner of a fork of ``repo``."""
    for field in ("title", "head", "base"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise validation_failed(
                {"resource": "PullRequest", "field": field, "code": "missing_field"}
            )
    head_owner, _, head_ref = body["head"].rpartition(":")
    head_repo = find_head_repo(s, repo, head_owner or repo.owner)
    if head_repo is None:
        raise validation_failed({"resource": "PullRequest", "field": "head", "code": "invalid"})
    base_ref = body["base"]
    head_sha = git_http.ref_sha(head_repo.bare_path, f"refs/heads/{head_ref}")
    base_sha = git_http.ref_sha(repo.bare_path, f"refs/heads/{base_ref}")
    if head_sha is None:
        raise validation_failed({"resource": "PullRequest", "field": "head", "code": "invalid"})
    if base_sha is None:
        raise validation_failed({"resource": "PullRequest", "field": "base", "code": "invalid"})
    if open_pull_for(s, repo, head_repo, head_ref, base_ref) is not None:
        raise validation_failed(
            {
                "resource": "PullRequest",
                "code": "custom",
                "message": f"A pull request already exists for {head_repo.owner}:{head_ref}.",
            }
        )
    if head_repo is not repo:
        # Bring the fork's commits into the base repository, where GitHub keeps them too.
        git_http.fetch_ref(
            repo.bare_path, head_repo.bare_path, f"refs/heads/{head_ref}", "refs/sim/incoming"
        )
    ahead = git_http.count_commits(repo.bare_path, f"{base_sha}..{head_sha}")
    if head_repo is not repo:
        git_http.delete_ref(repo.bare_path, "refs/sim/incoming")
    if ahead == 0:
        raise validation_failed(
            {
                "resource": "PullRequest",
                "code": "custom",
                "message": f"No commits between {base_ref} and {head_repo.owner}:{head_ref}"
                if head_repo is not repo
                else f"No commits between {base_ref} and {head_ref}",
            }
        )
    issue = s.new_issue(repo, title=body["title"], body=body.get("body"), user=user)
    issue.pull_id = s.state.next_id()
    issue.pull = Pull(
        head_ref=head_ref,
        base_ref=base_ref,
        head_sha=head_sha,
        base_sha=base_sha,
        head_repo=head_repo.full_name,
        draft=bool(body.get("draft", False)),
        maintainer_can_modify=bool(body.get("maintainer_can_modify", False))
        and head_repo is not repo,
    )
    s.sync_pull_ref(repo, issue)
    return issue


def find_head_repo(s: GitHubSim, repo: Repo, owner: str) -> Repo | None:
    """``repo`` itself for its own owner, else ``owner``'s fork of it (if there is one)."""
    if owner.lower() == repo.owner.lower():
        return repo
    fork = s.state.repo(f"{owner}/{repo.name}")
    if fork is not None and (fork.fork_of or "").lower() == repo.full_name.lower():
        return fork
    forks = [
        r
        for r in s.state.repos.values()
        if r.owner.lower() == owner.lower() and (r.fork_of or "").lower() == repo.full_name.lower()
    ]
    return forks[0] if forks else None


def open_pull_for(
    s: GitHubSim, repo: Repo, head_repo: Repo, head_ref: str, base_ref: str
) -> Issue | None:
    for existing in s.state.issues[repo.full_name.lower()].values():
        if (
            existing.pull
            and existing.state == "open"
            and existing.pull.head_repo.lower() == head_repo.full_name.lower()
            and existing.pull.head_ref == head_ref
            and existing.pull.base_ref == base_ref
        ):
            return existing
    return None


def apply_pull_update(s: GitHubSim, repo: Repo, issue: Issue, body: dict[str, Any]) -> None:
    """PATCH a pull request: title, body, state, base, maintainer_can_modify. Like GitHub, other
    fields (``draft`` among them: only GraphQL changes it) are ignored."""
    assert issue.pull is not None
    for field, kinds in (
        ("title", (str,)),
        ("body", (str, type(None))),
        ("state", (str,)),
        ("base", (str,)),
        ("maintainer_can_modify", (bool,)),
    ):
        if field in body and not isinstance(body[field], kinds):
            raise validation_failed({"resource": "PullRequest", "field": field, "code": "invalid"})
    if "title" in body:
        issue.title = body["title"]
    if "body" in body:
        issue.body = body["body"]
    if "maintainer_can_modify" in body and issue.pull.head_repo != repo.full_name:
        issue.pull.maintainer_can_modify = body["maintainer_can_modify"]
    if "base" in body:
        if git_http.ref_sha(repo.bare_path, f"refs/heads/{body['base']}") is None:
            raise validation_failed({"resource": "PullRequest", "field": "base", "code": "invalid"})
        issue.pull.base_ref = body["base"]
    if "state" in body:
        if body["state"] not in ("open", "closed"):
            raise validation_failed(
                {"resource": "PullRequest", "field": "state", "code": "invalid"}
            )
        if body["state"] == "open" and issue.state == "closed":
            head_repo = s.head_repo(issue)
            if open_pull_for(s, repo, head_repo, issue.pull.head_ref, issue.pull.base_ref):
                raise validation_failed(
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": "A pull request already exists for "
                        f"{head_repo.owner}:{issue.pull.head_ref}.",
                    }
                )
        issue.state = body["state"]
        issue.closed_at = utcnow() if issue.state == "closed" else None
    issue.updated_at = utcnow()


# ---- git smart HTTP ------------------------------------------------------------------------------


def basic_auth_token() -> str | None:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = (
            base64.b64decode(credential, validate=True).decode("utf-8").partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password if user == "x-access-token" and password else None


def git_unauthorized() -> Response:
    response = Response("Unauthorized\n", status=401, content_type="text/plain")
    response.headers["WWW-Authenticate"] = 'Basic realm="GitHub"'
    return response


def git_service(path: str) -> str | None:
    if path == "info/refs":
        return request.args.get("service")
    return path if path in GIT_SERVICES else None


def web_blueprint() -> Blueprint:
    """GitHub's "register a new App from a manifest" form, for a person or an organisation.

    GitHub asks the signed-in person to confirm first; here they always do, so the form answers
    with the redirect GitHub sends after that click: ``redirect_url?code=...&state=...``.
    """
    bp = Blueprint("web", __name__)

    def register(owner: str | None) -> Response:
        try:
            manifest = json.loads(request.form["manifest"])
        except (KeyError, ValueError):
            return Response("a manifest form field holding JSON is required\n", 422)
        if not isinstance(manifest, dict) or not manifest.get("redirect_url"):
            return Response("the manifest needs a redirect_url\n", 422)
        code = sim().register_manifest(manifest, owner)
        query = {"code": code}
        if request.args.get("state"):
            query["state"] = request.args["state"]
        separator = "&" if "?" in manifest["redirect_url"] else "?"
        return Response(
            status=302,
            headers={"Location": manifest["redirect_url"] + separator + urlencode(query)},
        )

    @bp.post("/settings/apps/new")
    def new_personal_app() -> Response:
        return register(None)

    @bp.post("/organizations/<org>/settings/apps/new")
    def new_organization_app(org: str) -> Response:
        return register(org)

    return bp


def git_blueprint() -> Blueprint:
    bp = Blueprint("git", __name__)

    @bp.route("/<owner>/<name>.git/<path:path>", methods=["GET", "POST"])
    def smart_http(owner: str, name: str, path: str) -> Response:
        s = sim()
        service = git_service(path)
        repo = s.state.repo(f"{owner}/{name}")
        if service not in GIT_SERVICES or repo is None:
            return Response("Repository not found.\n", status=404, content_type="text/plain")
        token_value = basic_auth_token()
        token = s.state.valid_token(token_value) if token_value else None
        authorized = token is not None and token.installation_id == repo.installation_id
        if not authorized and (repo.private or service == "git-receive-pack"):
            return git_unauthorized()
        env = git_http.http_backend_env(
            s.repos_root,
            path_info=f"/{repo.owner}/{repo.name}.git/{path}",
            method=request.method,
            query=request.query_string.decode("latin-1"),
            content_type=request.content_type or "",
            content_encoding=request.headers.get("Content-Encoding", ""),
            remote_user=s.bot_login if authorized else "",
            remote_addr=request.remote_addr or "127.0.0.1",
            git_protocol=request.headers.get("Git-Protocol", ""),
        )
        if path == "git-receive-pack":
            return receive_pack(repo, env)
        return cgi_response(env)

    return bp


def cgi_response(env: dict[str, str]) -> Response:
    with tempfile.TemporaryFile() as body:
        length = copy_request_body(body)
        cgi = git_http.run_http_backend(env, body, length)
    response = Response(cgi.body, status=cgi.status, direct_passthrough=True)
    for header, value in cgi.headers:
        response.headers[header] = value
    return response


def receive_pack(repo: Repo, env: dict[str, str]) -> Response:
    """A push: run receive-pack to completion under the repo's lock, then record moved refs."""
    s = sim()
    with tempfile.TemporaryFile() as body:
        length = copy_request_body(body)
        with s.state.lock:
            before = git_http.list_refs(repo.bare_path)
            cgi = git_http.run_http_backend(env, body, length)
            output = b"".join(cgi.body)
            moved = git_http.changed_refs(before, git_http.list_refs(repo.bare_path))
            for ref, old, new in moved:
                s.state.pushes.append(Push(repo=repo.full_name, ref=ref, old_sha=old, new_sha=new))
                log.info("github_sim.pushed", repo=repo.full_name, ref=ref, old=old, new=new)
    response = Response(output, status=cgi.status)
    for header, value in cgi.headers:
        response.headers[header] = value
    return response


def copy_request_body(target: Any) -> int:
    """Spool the (possibly chunked) request body to a file; return its length."""
    stream = request.stream
    length = 0
    while chunk := stream.read(65536):
        target.write(chunk)
        length += len(chunk)
    target.seek(0)
    return length


# ---- admin (seeding and inspection from another process) -----------------------------------------


def admin_blueprint() -> Blueprint:
    bp = Blueprint("admin", __name__)

    def delivery_json(delivery: Delivery) -> Response:
        return json_response(delivery_fields(delivery))

    @bp.post("/repos")
    def admin_create_repo() -> Response:
        body = request_object()
        return json_response(
            sim().create_repo(
                body["full_name"],
                Path(body["source_dir"]),
                installation_id=int(body.get("installation_id", 1)),
                default_branch=body.get("default_branch", "main"),
                private=bool(body.get("private", True)),
            ),
            201,
        )

    @bp.post("/issues")
    def admin_create_issue() -> Response:
        body = request_object()
        return json_response(
            sim().create_issue(
                body["full_name"],
                body["title"],
                body.get("body"),
                user=body.get("user", "octo-maintainer"),
                labels=body.get("labels", ()),
            ),
            201,
        )

    @bp.post("/labels")
    def admin_add_label() -> Response:
        body = request_object()
        return delivery_json(
            sim().add_label(
                body["full_name"],
                int(body["number"]),
                body["label"],
                sender=body.get("sender", "octo-maintainer"),
            )
        )

    @bp.post("/comments")
    def admin_comment() -> Response:
        body = request_object()
        comment, delivery = sim().comment(
            body["full_name"],
            int(body["number"]),
            body["body"],
            user=body.get("user", "octo-maintainer"),
        )
        return json_response({"comment": comment, "delivery": dataclasses.asdict(delivery)})

    @bp.post("/permissions")
    def admin_set_permission() -> Response:
        body = request_object()
        if body.get("permission") not in PERMISSIONS:
            raise validation_failed({"field": "permission", "code": "invalid"})
        sim().set_permission(body["full_name"], body["user"], body["permission"])
        return json_response({"ok": True})

    @bp.post("/deliver")
    def admin_deliver() -> Response:
        body = request_object()
        return delivery_json(sim().deliver(body["event"], body["payload"], body.get("delivery_id")))

    @bp.get("/job-logs/<int:job_id>")
    def job_log(job_id: int) -> Response:
        """Where a job's logs URL redirects to (on GitHub a signed URL on another host)."""
        s = sim()
        with s.state.lock:
            job = s.find_job(job_id)
        if job is None:
            raise not_found()
        return Response(job[1].log, content_type="text/plain; charset=utf-8")

    @bp.get("/reactions")
    def admin_reactions() -> Response:
        """Every reaction with its precise clocks (``monotonic_ms``, ``unix_ms``), for timing
        from another process on the same machine (``time.monotonic`` is system-wide)."""
        with sim().state.lock:
            return json_response(
                [
                    {**dataclasses.asdict(r), "created_at": payloads.iso(r.created_at)}
                    for r in sim().state.reactions
                ]
            )

    @bp.get("/state")
    def admin_state() -> Response:
        return json_response(state_summary())

    return bp


def delivery_fields(delivery: Delivery) -> dict[str, Any]:
    """A delivery as the admin API shows it (``delivered_at`` in GitHub's spelling)."""
    fields = dataclasses.asdict(delivery)
    return {**fields, "delivered_at": payloads.iso(delivery.delivered_at)}


def state_summary() -> dict[str, Any]:
    s = sim()
    with s.state.lock:
        repos = list(s.state.repos.values())
        return {
            "url": s.url,
            "api_url": s.api_url,
            "repos": {
                repo.full_name: {
                    "issues": [
                        s.render_issue(repo, i)
                        for i in s.state.issues[repo.full_name.lower()].values()
                    ],
                    "comments": [
                        s.render_comment(repo, c)
                        for c in s.state.comments.values()
                        if c.repo == repo.full_name
                    ],
                    "pulls": s.pulls(repo.full_name),
                    "reactions": s.reactions(repo.full_name),
                    "branches": {
                        ref.removeprefix("refs/heads/"): sha
                        for ref, sha in git_http.list_refs(repo.bare_path).items()
                        if ref.startswith("refs/heads/")
                    },
                }
                for repo in repos
            },
            "pushes": [dataclasses.asdict(p) for p in s.state.pushes],
            "deliveries": [delivery_fields(w.delivery) for w in s.state.webhooks],
            "request_count": len(s.state.requests),
            "time": datetime.now(UTC).isoformat(),
        }
