"""Which deliveries start what: real-shape fixtures, signed, through the receiver over HTTP.

The receiver decides from the payload alone and hands the request to the intake lane; what it
queued there is what these tests read. The intake lane's own checks (permission, 👀, replies)
are exercised end to end in tests/e2e/test_triggers.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from rq import Queue

from codexbot import keys
from codexbot.commands import MARKER
from tests.conftest import load_fixture


def intake_jobs(receiver, redis) -> list[dict]:
    queue = Queue(receiver.settings.codex_fast_queue, connection=redis)
    return [job.kwargs for job in queue.jobs]


def deliver(receiver, name: str, change=None):
    payload = copy.deepcopy(load_fixture(f"{name}.json"))
    if change:
        change(payload)
    event = name.split("__")[0]
    return receiver.deliver(event, payload)


def human_pull(payload: dict) -> None:
    payload["pull_request"]["user"].update(login="octo-contributor", type="User")
    payload["pull_request"]["head"]["ref"] = "feature"


@pytest.mark.parametrize(
    ("fixture", "change", "expected"),
    [
        ("issues__labeled", None, {"kind": "fix", "is_pull": False, "comment_id": None}),
        ("issues__opened", None, {"kind": "fix", "is_pull": False}),
        (
            "issue_comment__created",
            None,
            {"kind": "fix", "is_pull": False, "comment_type": "issue", "text": "also handle tabs"},
        ),
        (
            "issue_comment__created_on_pr",
            None,
            {"kind": "fix", "is_pull": True, "text": "add a test for tabs"},
        ),
        (
            "issue_comment__created",
            lambda p: p["comment"].update(body="/codex ask where is the parser?"),
            {"kind": "ask", "text": "where is the parser?"},
        ),
        (
            "issue_comment__created",
            lambda p: p["comment"].update(body="/codex stop"),
            {"kind": "stop"},
        ),
        (
            "issue_comment__created",
            lambda p: p["comment"].update(body="/codex help"),
            {"kind": "help"},
        ),
        (
            "issue_comment__created",
            lambda p: p["comment"].update(body="/codex dance"),
            {"kind": "unknown", "text": "dance"},
        ),
        (
            "issue_comment__edited",
            lambda p: p["changes"]["body"].update(**{"from": "typo"}),
            {"kind": "fix", "text": "also handle tabs and newlines"},
        ),
        (
            "pull_request_review__submitted",
            None,
            {
                "kind": "review",
                "is_pull": True,
                "comment_type": "review",
                "text": "/codex please keep the docstring in sync",
            },
        ),
        (
            "pull_request_review__submitted",
            lambda p: p["review"].update(body="Not yet."),
            {"kind": "review", "text": ""},
        ),
        ("pull_request_review__submitted", human_pull, {"kind": "unknown", "text": "please"}),
        (
            "pull_request_review__submitted",
            lambda p: (human_pull(p), p["review"].update(body="/codex fix rename it")),
            {"kind": "fix", "text": "rename it"},
        ),
        (
            "pull_request_review_comment__created",
            None,
            {
                "kind": "review",
                "comment_type": "review_comment",
                "text": "/codex handle None as an empty text here",
            },
        ),
        (
            "pull_request_review_comment__created",
            lambda p: p["comment"].update(body="/codex ask why?"),
            {"kind": "ask", "text": "why?"},
        ),
    ],
)
def test_each_trigger_queues_one_intake(receiver, redis, fixture, change, expected):
    response = deliver(receiver, fixture, change)
    assert response.status_code == 202, response.text
    jobs = intake_jobs(receiver, redis)
    assert len(jobs) == 1
    assert {name: jobs[0][name] for name in expected} == expected
    assert jobs[0]["task_id"] == response.json()["task_id"]


def bot_author(payload: dict) -> None:
    payload["comment"]["user"].update(login="dependabot[bot]", type="Bot")


@pytest.mark.parametrize(
    ("fixture", "change"),
    [
        ("issues__labeled", lambda p: p["label"].update(name="bug")),
        ("issue_comment__created", lambda p: p["comment"].update(body="Thanks, looks good.")),
        ("issue_comment__created", lambda p: p["comment"].update(body="> /codex fix\nNo.")),
        ("issue_comment__created", lambda p: p["comment"].update(body="```\n/codex fix\n```")),
        ("issue_comment__created", bot_author),
        ("issue_comment__created", lambda p: p["comment"].update(body=f"/codex fix\n{MARKER}")),
        (
            "issue_comment__created",
            lambda p: p["comment"].update(performed_via_github_app={"id": 1, "slug": "codex-bot"}),
        ),
        ("issue_comment__edited", None),  # the command was there before the edit
        (
            "pull_request_review__submitted",
            lambda p: p["review"].update(body="Nice.", state="approved"),
        ),
        (
            "pull_request_review__submitted",
            lambda p: (
                human_pull(p),
                p["review"].update(body="Please fix.", state="changes_requested"),
            ),
        ),
        (
            "pull_request_review_comment__created",
            lambda p: p["comment"].update(body="A plain remark."),
        ),
    ],
)
def test_non_triggers_queue_nothing(receiver, redis, fixture, change):
    response = deliver(receiver, fixture, change)
    assert response.status_code == 204, response.text
    assert intake_jobs(receiver, redis) == []


def test_trusted_bots_setting_lets_a_bot_ask(redis):
    from tests.conftest import Receiver, make_settings

    settings = make_settings(codex_trusted_bots="ci-helper[bot]", codex_fast_queue="fast-trust")
    served = Receiver(settings, redis)
    try:

        def ci_helper(p):
            p["comment"]["user"].update(login="ci-helper[bot]", type="Bot")

        assert deliver(served, "issue_comment__created", ci_helper).status_code == 202
        assert deliver(served, "issue_comment__created", bot_author).status_code == 204
    finally:
        served.close()


def test_a_plain_comment_steers_only_a_running_task(receiver, redis):
    def plain(payload):
        payload["comment"]["body"] = "Also think about tabs."

    assert deliver(receiver, "issue_comment__created", plain).status_code == 204
    payload = load_fixture("issue_comment__created.json")
    redis.set(keys.target(payload["repository"]["full_name"], payload["issue"]["number"]), "t-1")
    assert deliver(receiver, "issue_comment__created", plain).status_code == 202
    assert intake_jobs(receiver, redis)[0]["kind"] == "steer"


def github_example(key: str, **changes) -> tuple[str, dict]:
    """GitHub's own example payload of a webhook, with an installation and `changes` applied
    (`"workflow_run.head_branch": "codex/x"` sets a nested field)."""
    examples = json.loads((Path(__file__).parent / "openapi" / "webhook-examples.json").read_text())
    example = copy.deepcopy(examples[key])
    payload = example["payload"]
    payload["installation"] = {"id": 7}
    payload["repository"]["full_name"] = "octo-org/widgets"
    payload["sender"].update(login="octo-maintainer", type="User")
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = payload
        for part in parents:
            node = node[part]
        node[last] = value
    return example["event"], payload


PR = {"number": 5, "id": 1, "url": "https://x", "head": {}, "base": {}}
RED_RUN = {
    "workflow_run.conclusion": "failure",
    "workflow_run.head_branch": "codex/issue-1-fix",
    "workflow_run.head_sha": "a" * 40,
    "workflow_run.id": 77,
    "workflow_run.pull_requests": [PR],
}
RED_SUITE = {
    "check_suite.conclusion": "failure",
    "check_suite.head_branch": "codex/issue-1-fix",
    "check_suite.head_sha": "b" * 40,
    "check_suite.id": 88,
    "check_suite.pull_requests": [PR],
    "check_suite.app.slug": "circleci-checks",
    "check_suite.app.id": 4242,
}
PERSON_PR = {
    "pull_request.draft": False,
    "pull_request.state": "open",
    "pull_request.user.login": "octo-contributor",
    "pull_request.user.type": "User",
}


@pytest.mark.parametrize(
    ("key", "changes", "expected"),
    [
        ("pull-request-opened", PERSON_PR, {"kind": "auto_review", "is_pull": True}),
        (
            "pull-request-ready-for-review",
            PERSON_PR,
            {"kind": "auto_review", "comment_id": None},
        ),
        (
            "workflow-run-completed",
            RED_RUN,
            {"kind": "fix_ci", "number": 5, "text": f"workflow_run 77 {'a' * 40}"},
        ),
        (
            "check-suite-completed",
            RED_SUITE,
            {"kind": "fix_ci", "number": 5, "text": f"check_suite 88 {'b' * 40}"},
        ),
    ],
)
def test_pull_requests_and_red_ci_queue_one_intake(receiver, redis, key, changes, expected):
    event, payload = github_example(key, **changes)
    response = receiver.deliver(event, payload)
    assert response.status_code == 202, response.text
    (job,) = intake_jobs(receiver, redis)
    assert {name: job[name] for name in expected} == expected


@pytest.mark.parametrize(
    ("key", "changes"),
    [
        ("pull-request-opened", {**PERSON_PR, "pull_request.draft": True}),
        (
            "pull-request-opened",
            {
                **PERSON_PR,
                "pull_request.user.login": "codex-bot[bot]",
                "pull_request.user.type": "Bot",
            },
        ),
        ("workflow-run-completed", {**RED_RUN, "workflow_run.conclusion": "success"}),
        ("workflow-run-completed", {**RED_RUN, "workflow_run.head_branch": "feature"}),
        ("workflow-run-completed", {**RED_RUN, "workflow_run.pull_requests": []}),
        ("check-suite-completed", {**RED_SUITE, "check_suite.app.slug": "github-actions"}),
        ("check-suite-completed", {**RED_SUITE, "check_suite.app.id": 1}),  # our own App's
    ],
)
def test_what_is_not_a_review_or_red_ci_of_ours_queues_nothing(receiver, redis, key, changes):
    event, payload = github_example(key, **changes)
    response = receiver.deliver(event, payload)
    assert response.status_code == 204, response.text
    assert intake_jobs(receiver, redis) == []
