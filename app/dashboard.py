"""Who may read /tasks and /metrics: anyone while ``CODEX_DASHBOARD_TOKEN`` is unset, else
whoever sends ``Authorization: Bearer <token>`` (a Prometheus scrape, curl) or the cookie a
browser gets from the login form.

The cookie holds an HMAC of the token, never the token: it is worth nothing elsewhere, and a
new token makes every old cookie worthless. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from codexbot.settings import Settings

blueprint = Blueprint("dashboard", __name__, template_folder="templates")

COOKIE = "codexbot_dashboard"
COOKIE_SECONDS = 30 * 24 * 3600
CHALLENGE = 'Bearer realm="codex-bot"'
LOGIN_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"codex-bot dashboard session", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    # Digests first: compare_digest is constant-time only for inputs of equal length.
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def _token(settings: Settings) -> str | None:
    secret = settings.codex_dashboard_token
    return secret.get_secret_value() if secret is not None else None


def require_token() -> Response | None:
    """A ``before_request`` for the protected blueprints: None lets the request through."""
    token = _token(current_app.config["SETTINGS"])
    if token is None:
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and _same(given.strip(), token):
        return None
    if _same(request.cookies.get(COOKIE, ""), cookie_value(token)):
        return None
    # A browser names text/html; a scraper or curl sends */* or nothing.
    if any(kind == "text/html" for kind, _ in request.accept_mimetypes):
        return _login_page(request.full_path.rstrip("?"), wrong=False)
    response = Response("401 dashboard token required: Authorization: Bearer <token>\n", 401)
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["WWW-Authenticate"] = CHALLENGE
    return response


def _login_page(next_path: str, wrong: bool) -> Response:
    page = render_template("dashboard/login.html", next_path=next_path, wrong=wrong)
    response = Response(page, 401, mimetype="text/html")
    response.headers.update(LOGIN_HEADERS)
    response.headers["WWW-Authenticate"] = CHALLENGE
    return response


def _local_path(value: str) -> str:
    """Where to go after logging in: a path on this receiver, nowhere else."""
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return "/tasks"
    return value


@blueprint.post("/login")
def log_in_with_token() -> BaseResponse:
    token = _token(current_app.config["SETTINGS"])
    next_path = _local_path(request.form.get("next", "/tasks"))
    if token is None:
        return redirect(next_path, 303)
    if not _same(request.form.get("token", ""), token):
        return _login_page(next_path, wrong=True)
    response = redirect(next_path, 303)
    secure = request.is_secure or request.headers.get("X-Forwarded-Proto") == "https"
    response.set_cookie(
        COOKIE,
        cookie_value(token),
        max_age=COOKIE_SECONDS,
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    return response
