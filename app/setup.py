"""GET /setup: create the GitHub App from its manifest, as Probot does, when none is configured.

``codexbot serve`` without App credentials serves this instead of the webhook receiver:

1. ``GET /setup`` asks which account owns the App (the person's own, or an organisation) and
   its name, then offers a form that posts the manifest (``github-app-manifest.json`` with this
   host's webhook and redirect URLs filled in) to GitHub's "new App from manifest" page.
2. GitHub creates the App and sends the browser back to ``/setup/done?code=...&state=...``.
3. The bot exchanges the code (``POST /app-manifests/{code}/conversions``, unauthenticated: the
   one-hour code is the credential) for the App's id, private key and webhook secret, writes
   them to the settings file (mode 0600, never logged), and links the App's installation page.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.error
import urllib.request
from importlib import resources
from typing import Any
from urllib.parse import quote

import structlog
from flask import Blueprint, Flask, Response, current_app, render_template, request

from codexbot.settings import app_configured, settings_file, write_settings_file
from workers.github import git_base_url

blueprint = Blueprint("setup", __name__, template_folder="templates")
log = structlog.get_logger()

ORGANIZATION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
APP_NAME_LIMIT = 34  # GitHub's limit on an App's name
CONVERSION_TIMEOUT = 15


def load_manifest() -> dict[str, Any]:
    """The App's manifest as shipped (permissions, events); URLs are filled per request."""
    text = resources.files("app").joinpath("github-app-manifest.json").read_text("utf-8")
    manifest: dict[str, Any] = json.loads(text)
    return manifest


def fill_manifest(
    manifest: dict[str, Any], public_url: str, name: str | None = None
) -> dict[str, Any]:
    """The manifest with this receiver's webhook and redirect URLs (a pure function)."""
    filled = json.loads(json.dumps(manifest))
    filled["hook_attributes"] = {
        **filled.get("hook_attributes", {}),
        "url": f"{public_url}/webhook",
    }
    filled["redirect_url"] = f"{public_url}/setup/done"
    if name:
        filled["name"] = name
    return filled


def new_app_url(web_url: str, organization: str | None, state: str) -> str:
    """GitHub's "register a new App from a manifest" page for a person or an organisation."""
    if organization:
        return f"{web_url}/organizations/{quote(organization)}/settings/apps/new?state={state}"
    return f"{web_url}/settings/apps/new?state={state}"


def create_setup_app(api_url: str, public_url: str | None = None) -> Flask:
    """The set-up server: ``/setup``, ``/setup/done`` and ``/healthz``; nothing else."""
    flask_app = Flask(__name__)
    flask_app.config.update(
        API_URL=api_url.rstrip("/"),
        WEB_URL=git_base_url(api_url),
        PUBLIC_URL=public_url.rstrip("/") if public_url else None,
        # GitHub hands it back with the code: a redirect this process did not start is refused.
        STATE=secrets.token_urlsafe(24),
    )
    flask_app.register_blueprint(blueprint)
    return flask_app


def _page(template: str, status: int = 200, **context: Any) -> Response:
    form_target = current_app.config["WEB_URL"]
    response = Response(render_template(template, **context), status, mimetype="text/html")
    response.headers.update(
        {
            # No script at all; the only form that leaves goes to GitHub.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            f"base-uri 'none'; form-action 'self' {form_target}; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
    )
    return response


@blueprint.get("/")
def redirect_to_setup() -> Response:
    return Response(status=302, headers={"Location": "/setup"})


@blueprint.get("/healthz")
def report_setup_health() -> Response:
    return Response('{"status": "setup"}', 200, mimetype="application/json")


@blueprint.get("/setup")
def offer_the_manifest() -> Response:
    if app_configured():
        return _page("setup/configured.html", path=settings_file())
    organization = request.args.get("organization", "").strip()
    name = request.args.get("name", "").strip()[:APP_NAME_LIMIT]
    problem = None
    if organization and not ORGANIZATION.match(organization):
        problem = "An organisation's name is letters, digits and single hyphens."
        organization = ""
    public_url = current_app.config["PUBLIC_URL"] or request.host_url.rstrip("/")
    manifest = fill_manifest(load_manifest(), public_url, name or None)
    action = new_app_url(
        current_app.config["WEB_URL"], organization or None, current_app.config["STATE"]
    )
    return _page(
        "setup/start.html",
        manifest=json.dumps(manifest),
        app_name=manifest["name"],
        action=action,
        organization=organization,
        public_url=public_url,
        problem=problem,
    )


@blueprint.get("/setup/done")
def exchange_the_code() -> Response:
    if app_configured():
        return _page("setup/configured.html", path=settings_file())
    code = request.args.get("code", "")
    if request.args.get("state") != current_app.config["STATE"] or not re.fullmatch(
        r"[A-Za-z0-9_-]{1,200}", code
    ):
        return _page("setup/failed.html", 400, reason="This link did not come from this set-up.")
    try:
        app = _convert(current_app.config["API_URL"], code)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "code", None) == 404 and "The code was used or is over an hour old."
        log.warning("app manifest conversion failed", error=type(error).__name__)
        return _page(
            "setup/failed.html", 502, reason=reason or "GitHub did not answer as expected."
        )
    path = settings_file()
    write_settings_file(
        path,
        {
            "GITHUB_APP_ID": str(app["id"]),
            "GITHUB_PRIVATE_KEY": str(app["pem"]),
            "GITHUB_WEBHOOK_SECRET": str(app["webhook_secret"]),
        },
    )
    log.info("app created from manifest", app_id=app["id"], slug=app.get("slug"), path=str(path))
    return _page(
        "setup/done.html",
        app_name=app.get("name", ""),
        app_id=app["id"],
        install_url=f"{app['html_url']}/installations/new",
        path=path,
    )


def _convert(api_url: str, code: str) -> dict[str, Any]:
    """``POST /app-manifests/{code}/conversions``: the new App with its ``pem`` and secrets."""
    conversion = urllib.request.Request(  # noqa: S310 - the operator's own GitHub API URL
        f"{api_url}/app-manifests/{quote(code)}/conversions",
        method="POST",
        headers={"Accept": "application/vnd.github+json", "User-Agent": "codex-bot"},
    )
    with urllib.request.urlopen(conversion, timeout=CONVERSION_TIMEOUT) as answer:  # noqa: S310
        app = json.loads(answer.read())
    if not isinstance(app, dict) or not all(
        app.get(k) for k in ("id", "pem", "html_url", "webhook_secret")
    ):
        raise ValueError("the conversion's answer lacks id, pem, html_url or webhook_secret")
    return app
