"""Everything the simulator says must match GitHub's own OpenAPI descriptions.

A scenario drives every implemented endpoint (through PyGithub, as the bot does, plus raw
requests for error answers), then every recorded response body, and every JSON request body
the client sent, is validated against the vendored subset of GitHub's description. Webhook
payloads are validated against GitHub's webhook descriptions. A mismatch is a simulator bug.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from github import Auth, Github, GithubIntegration

from sim.github import GitHubSim
from tests.openapi.validate import (
    SchemaMismatch,
    match_path,
    validate_recorded,
    validate_request,
    validate_response,
    validate_webhook,
)
from tests.sim.conftest import APP_ID, OWNER_REPO, WebhookReceiver, api, app_jwt
from tests.sim.test_rest import NO_THROTTLE, push_branch
from tests.sim.test_webhooks import closed_port_url
from workers.githubapp import GitHubApp

VENDORED = Path(__file__).resolve().parent.parent / "openapi" / "rest-subset.json"


def drive_every_endpoint(sim: GitHubSim, private_pem: bytes, tmp_path: Path) -> None:
    integration = GithubIntegration(
        auth=Auth.AppAuth(APP_ID, private_pem.decode()), base_url=sim.api_url, **NO_THROTTLE
    )
    integration.get_app()
    list(integration.get_installations())
    installation = integration.get_repo_installation("octo-org", "widgets")
    token = integration.get_access_token(installation.id).token
    integration.close()

    gh = Github(base_url=sim.api_url, auth=Auth.Token(token), **NO_THROTTLE)
    repo = gh.get_repo(OWNER_REPO)
    sim.create_issue(OWNER_REPO, "add() subtracts", "It returns a - b.", labels=["bug"])
    issue = repo.get_issue(1)
    comment = issue.create_comment("On it")
    comment.edit("On it, step 2")
    issue.get_comment(comment.id)
    list(issue.get_comments())
    issue.create_reaction("eyes")
    issue.create_reaction("eyes")
    comment.create_reaction("rocket")
    list(issue.get_reactions())
    list(comment.get_reactions())
    # PyGithub's add_to_labels posts a bare JSON array, which GitHub accepts but its current
    # description no longer documents; send the documented object form here.
    assert (
        api(
            sim,
            "POST",
            f"/repos/{OWNER_REPO}/issues/1/labels",
            token,
            {"labels": ["codex:working"]},
        ).status_code
        == 200
    )
    list(issue.get_labels())

    head = push_branch(sim, token, tmp_path, "codex/issue-1", count=2)
    pull = repo.create_pull(
        title="Fix add", body="Closes #1", head="codex/issue-1", base="main", draft=True
    )
    repo.get_issue(pull.number)
    list(pull.get_commits())
    pull.create_review_request(reviewers=["octo-maintainer"])
    pull.edit(title="Fix add()")
    repo.get_pull(pull.number)
    list(repo.get_pulls(state="all"))
    repo.get_branch("codex/issue-1")
    repo.get_git_ref("heads/codex/issue-1")
    list(repo.get_commits(sha=head))
    repo.get_collaborator_permission("octo-maintainer")

    # Webhook deliveries, a failed one among them, listed page by page and one redelivered.
    webhook_url, sim.webhook_url = sim.webhook_url, closed_port_url()
    sim.add_label(OWNER_REPO, 1, "missed")
    sim.webhook_url = webhook_url
    app = GitHubApp(app_id=APP_ID, private_key=private_pem.decode(), api_url=sim.api_url)
    failed = next(d for d in app.hook_deliveries() if not d.succeeded)
    app.redeliver(failed.id)
    sim.wait_for_echoes()
    jwt_headers = {"Authorization": f"Bearer {app_jwt(private_pem)}"}
    url: str | None = f"{sim.api_url}/app/hook/deliveries?per_page=3"
    while url:
        url = requests.get(url, headers=jwt_headers, timeout=10).links.get("next", {}).get("url")
    for bad in ("cursor=bogus", "status=sometimes"):
        url = f"{sim.api_url}/app/hook/deliveries?{bad}"
        assert requests.get(url, headers=jwt_headers, timeout=10).status_code >= 400

    submitted = sim.submit_review(
        OWNER_REPO,
        pull.number,
        "Two things",
        state="changes_requested",
        comments=[{"path": "change0.txt", "line": 1, "body": "Rename this"}],
    )
    thread = pull.get_review_comment(submitted.comments[0]["id"])
    list(pull.get_review_comments())
    reply = pull.create_review_comment_reply(thread.id, "Renamed in the next commit.")
    reply.create_reaction("eyes")
    list(thread.get_reactions())
    list(pull.get_reviews())
    pull.get_review(submitted.review["id"])
    list(pull.get_single_review_comments(submitted.review["id"]))
    bot_review = {
        "event": "COMMENT",
        "body": "**codex-bot review**",
        "comments": [{"path": "change0.txt", "line": 1, "side": "RIGHT", "body": "**P2** nit"}],
    }
    path = f"/repos/{OWNER_REPO}/pulls/{pull.number}/reviews"
    assert api(sim, "POST", path, token, bot_review).status_code == 200
    gh.close()
    bot = GitHubApp(app_id=APP_ID, private_key=private_pem.decode(), api_url=sim.api_url)
    bot_repo = bot.repository(OWNER_REPO, token)
    bot_repo.file_text("README.md", "main")
    output = {"title": "🛠️ Working", "summary": "Task `t1`: fix asked by @octo-maintainer."}
    fields = {"status": "in_progress", "external_id": "t1", "output": output}
    check_run = bot_repo.create_check_run(head, "codex-bot", fields)
    bot_repo.update_check_run(
        check_run, {"status": "completed", "conclusion": "success", "output": output}
    )
    assert [r["conclusion"] for r in sim.check_runs(OWNER_REPO, head)] == ["success"]
    api(sim, "GET", f"/repos/{OWNER_REPO}/commits/{head}/check-runs", token)
    ids, _ = sim.complete_workflow_run(
        OWNER_REPO, "codex/issue-1", {"tests": ("failure", "FAILED test_add\n")}
    )
    assert [job["name"] for job in bot_repo.failed_jobs(ids["run_id"])] == ["tests"]
    assert bot_repo.job_log(ids["job_ids"][0]) == "FAILED test_add\n"
    suite_id, _ = sim.complete_check_suite(
        OWNER_REPO, "codex/issue-1", {"build": ("failure", "make: *** [all] Error 1")}
    )
    assert bot_repo.failed_check_runs(suite_id) == [
        ("build", "build: failure\nbuild finished with failure.\nmake: *** [all] Error 1")
    ]
    bot_repo.close()

    # Error answers, with the bodies GitHub documents for them.
    for method, path, body in (
        ("GET", "/repos/octo-org/missing", None),
        ("GET", f"/repos/{OWNER_REPO}/issues/404", None),
        ("GET", f"/repos/{OWNER_REPO}/pulls/404", None),
        ("GET", f"/repos/{OWNER_REPO}/branches/missing", None),
        ("GET", f"/repos/{OWNER_REPO}/git/ref/heads/missing", None),
        (
            "POST",
            f"/repos/{OWNER_REPO}/pulls",
            {"title": "dup", "head": "codex/issue-1", "base": "main"},
        ),
        ("POST", f"/repos/{OWNER_REPO}/pulls", {"title": "bad", "head": "missing", "base": "main"}),
        ("POST", f"/repos/{OWNER_REPO}/issues/1/comments", {"body": ""}),
        ("POST", f"/repos/{OWNER_REPO}/issues/1/reactions", {"content": "party"}),
        ("GET", f"/repos/{OWNER_REPO}/collaborators/ghost/permission", None),
        ("GET", f"/repos/{OWNER_REPO}/pulls/comments/1", None),
        ("GET", f"/repos/{OWNER_REPO}/pulls/2/reviews/1", None),
        ("GET", f"/repos/{OWNER_REPO}/pulls/2/reviews/1/comments", None),
        ("POST", f"/repos/{OWNER_REPO}/pulls/2/comments/1/replies", {"body": "x"}),
        ("GET", f"/repos/{OWNER_REPO}/pulls/comments/1/reactions", None),
        ("GET", f"/repos/{OWNER_REPO}/contents/missing.txt", None),
        ("GET", f"/repos/{OWNER_REPO}/actions/runs/1/jobs", None),
        ("GET", f"/repos/{OWNER_REPO}/actions/jobs/1/logs", None),
        ("POST", f"/repos/{OWNER_REPO}/check-runs", {"name": "x", "head_sha": "0" * 40}),
        ("PATCH", f"/repos/{OWNER_REPO}/check-runs/1", {"status": "in_progress"}),
        (
            "POST",
            f"/repos/{OWNER_REPO}/pulls/2/reviews",
            {"event": "COMMENT", "body": "x", "comments": [{"path": "nope.txt", "line": 9}]},
        ),
        ("GET", f"/repos/{OWNER_REPO}/issues/404/reactions", None),
        ("GET", f"/repos/{OWNER_REPO}/issues/comments/1/reactions", None),
        ("POST", f"/repos/{OWNER_REPO}/pulls/comments/1/reactions", {"content": "eyes"}),
    ):
        assert api(sim, method, path, token, body).status_code >= 400
    assert api(sim, "GET", f"/repos/{OWNER_REPO}", "ghs_" + "0" * 36).status_code == 401

    # Last, since the simulator then becomes the new App: the manifest flow's conversion.
    manifest = {
        "name": "codex-bot",
        "url": "https://codexbot.example.com",
        "hook_attributes": {"url": "https://codexbot.example.com/webhook"},
        "redirect_url": "https://codexbot.example.com/setup/done",
        "default_permissions": {"issues": "write", "metadata": "read"},
        "default_events": ["issues"],
    }
    form = requests.post(
        f"{sim.url}/organizations/octo-org/settings/apps/new?state=s1",
        data={"manifest": json.dumps(manifest)},
        allow_redirects=False,
        timeout=10,
    )
    assert form.status_code == 302
    code = parse_qs(urlsplit(form.headers["Location"]).query)["code"][0]
    assert api(sim, "POST", f"/app-manifests/{code}/conversions", None).status_code == 201
    assert api(sim, "POST", f"/app-manifests/{code}/conversions", None).status_code == 404


def test_every_response_and_request_matches_githubs_description(
    github: GitHubSim, app_key: tuple[bytes, bytes], tmp_path: Path
) -> None:
    drive_every_endpoint(github, app_key[0], tmp_path)
    api_requests = [r for r in github.requests if r.path.startswith("/api/v3/")]
    failures = []
    for r in api_requests:
        try:
            validate_recorded(r)
        except SchemaMismatch as mismatch:
            failures.append(str(mismatch))
    assert not failures, "\n\n".join(failures)

    covered = {(r.method.lower(), match_path(r.path)) for r in api_requests if r.status < 400}
    vendored = json.loads(VENDORED.read_text("utf-8"))["paths"]
    documented = {(method, path) for path, methods in vendored.items() for method in methods}
    assert documented - covered == set()


@pytest.mark.parametrize(
    "send",
    [
        "ping",
        "issues_opened",
        "issues_labeled",
        "issue_comment_created",
        "issue_comment_edited",
        "pull_request_review_submitted",
        "pull_request_review_comment_created",
        "pull_request_review_comment_reply",
        "bot_comment",
        "pull_request_opened",
        "pull_request_ready_for_review",
        "workflow_run_completed",
        "check_suite_completed",
        "installation_created",
        "installation_repositories_added",
    ],
)
def test_webhook_payloads_match_githubs_description(
    github: GitHubSim,
    token: str,
    tmp_path: Path,
    webhook_receiver: WebhookReceiver,
    send: str,
) -> None:
    github.create_issue(OWNER_REPO, "bug", "body")
    push_branch(github, token, tmp_path, "codex/issue-1")
    api(
        github,
        "POST",
        f"/repos/{OWNER_REPO}/pulls",
        token,
        {"title": "Fix", "head": "codex/issue-1", "base": "main", "body": "b"},
    )
    comment, _ = github.comment(OWNER_REPO, 1, "@codex-bot please look", user="octo-maintainer")
    {
        "ping": lambda: github.ping(),
        "issues_opened": lambda: github.open_issue(OWNER_REPO, "another", "text"),
        "issues_labeled": lambda: github.add_label(OWNER_REPO, 1, "codex"),
        "issue_comment_created": lambda: github.comment(OWNER_REPO, 2, "/codex retry"),
        "issue_comment_edited": lambda: github.edit_comment(comment["id"], "edited text"),
        "pull_request_review_submitted": lambda: github.submit_review(
            OWNER_REPO, 2, "Please rename", state="changes_requested"
        ),
        "pull_request_review_comment_created": lambda: github.add_review_comment(
            OWNER_REPO, 2, "nit", path="change0.txt", line=1
        ),
        "pull_request_review_comment_reply": lambda: github.reply_to_review_comment(
            OWNER_REPO,
            2,
            github.add_review_comment(OWNER_REPO, 2, "nit", path="change0.txt", line=1)[0]["id"],
            "/codex fix this",
        ),
        "bot_comment": lambda: github.comment(OWNER_REPO, 2, "done", user=github.bot_login),
        "pull_request_opened": lambda: github.pull_request_event(OWNER_REPO, 2),
        "check_suite_completed": lambda: github.complete_check_suite(
            OWNER_REPO, "codex/issue-1", {"build": ("failure", "Error 1")}
        ),
        "workflow_run_completed": lambda: github.complete_workflow_run(
            OWNER_REPO, "codex/issue-1", {"tests": ("failure", "FAILED")}
        ),
        "pull_request_ready_for_review": lambda: github.pull_request_event(
            OWNER_REPO, 2, "ready_for_review", draft=False
        ),
        "installation_created": lambda: github.install_app("octo-org", 7),
        "installation_repositories_added": lambda: github.add_installation_repositories(
            7, [OWNER_REPO]
        ),
    }[send]()
    sent = github.webhooks[-1]
    assert sent.delivery.status_code == 202
    received = json.loads(webhook_receiver.received[-1].body)
    assert received == sent.payload
    validate_webhook(sent.delivery.event, received.get("action"), received)


def test_pygithub_bare_label_list_is_accepted_but_undocumented(
    github: GitHubSim, token: str
) -> None:
    github.create_issue(OWNER_REPO, "t", "b")
    gh = Github(base_url=github.api_url, auth=Auth.Token(token), **NO_THROTTLE)
    gh.get_repo(OWNER_REPO).get_issue(1).add_to_labels("codex")
    gh.close()
    sent = [
        r for r in github.requests if r.method == "POST" and r.path.endswith("/issues/1/labels")
    ][-1]
    assert sent.status == 200 and sent.request_json == ["codex"]
    validate_response(sent.method, sent.path, sent.status, sent.response_json)
    with pytest.raises(SchemaMismatch):
        validate_request(sent.method, sent.path, sent.request_json)
