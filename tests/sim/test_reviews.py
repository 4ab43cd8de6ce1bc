"""Pull request reviews and review comments: placed in the real diff, threaded, delivered."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from github import Auth, Github

from sim.github import GitHubSim, SimError
from sim.github.diff import locate_line
from tests.sim.conftest import OWNER_REPO, WebhookReceiver, api
from tests.sim.test_rest import NO_THROTTLE

FILE_DIFF = """diff --git a/m.py b/m.py
index 1..2 100644
--- a/m.py
+++ b/m.py
@@ -1,4 +1,4 @@ def head():
 one
-two
+TWO
 three
 four
@@ -10,3 +10,4 @@ def tail():
 ten
 eleven
+eleven and a half
 twelve
"""


@pytest.mark.parametrize(
    ("line", "side", "position", "hunk_last_line"),
    [
        (1, "RIGHT", 1, " one"),
        (2, "RIGHT", 3, "+TWO"),
        (2, "LEFT", 2, "-two"),
        (3, "RIGHT", 4, " three"),
        (3, "LEFT", 4, " three"),
        (12, "RIGHT", 9, "+eleven and a half"),
        (13, "RIGHT", 10, " twelve"),
        (12, "LEFT", 10, " twelve"),
    ],
)
def test_locate_line_counts_positions_like_github(
    line: int, side: str, position: int, hunk_last_line: str
) -> None:
    place = locate_line(FILE_DIFF, line, side)
    assert place is not None
    assert place.position == position
    assert place.diff_hunk.splitlines()[0].startswith("@@ ")
    assert place.diff_hunk.splitlines()[-1] == hunk_last_line


@pytest.mark.parametrize(
    ("line", "side"), [(5, "RIGHT"), (9, "RIGHT"), (2, "nowhere"), (99, "LEFT")]
)
def test_lines_outside_the_diff_have_no_place(line: int, side: str) -> None:
    assert locate_line(FILE_DIFF, line, side) is None
    assert locate_line("", 1) is None


@pytest.fixture
def pull(github: GitHubSim) -> int:
    """A PR by the bot changing line 2 of pkg/__init__.py (a - b -> a + b)."""
    github.push_as(
        OWNER_REPO,
        "codex/issue-1",
        {"pkg/__init__.py": "def add(a, b):\n    return a + b\n"},
        "Add instead of subtracting",
        author=github.bot_login,
    )
    return int(
        github.open_pull(OWNER_REPO, "codex/issue-1", "Fix add", user=github.bot_login)["number"]
    )


@pytest.fixture
def gh(github: GitHubSim, token: str) -> Iterator[Github]:
    client = Github(base_url=github.api_url, auth=Auth.Token(token), retry=None, **NO_THROTTLE)
    yield client
    client.close()


def test_review_with_inline_comments_is_delivered_as_github_does(
    github: GitHubSim, webhook_receiver: WebhookReceiver, pull: int
) -> None:
    submitted = github.submit_review(
        OWNER_REPO,
        pull,
        "/codex please also handle floats",
        state="changes_requested",
        comments=[
            {"path": "pkg/__init__.py", "line": 2, "body": "Keep the docstring"},
            {"path": "pkg/__init__.py", "line": 2, "side": "LEFT", "body": "Was a bug"},
        ],
    )
    # Each delivery is answered before submit_review returns, and the receiver records it before
    # answering: one missing here failed to be sent (status 0), and this says which and why.
    sent = [(d.event, d.status_code, d.response_body[:200]) for d in submitted.deliveries]
    assert len(webhook_receiver.received) == 3, f"deliveries sent: {sent}"
    events = [(h.headers["X-GitHub-Event"], json.loads(h.body)) for h in webhook_receiver.received]
    assert [(e, p["action"]) for e, p in events] == [
        ("pull_request_review", "submitted"),
        ("pull_request_review_comment", "created"),
        ("pull_request_review_comment", "created"),
    ]
    assert [d.status_code for d in submitted.deliveries] == [202, 202, 202]
    review = events[0][1]["review"]
    head = github.branch_sha(OWNER_REPO, "codex/issue-1")
    assert review["state"] == "changes_requested"
    assert review["body"] == "/codex please also handle floats"
    assert review["commit_id"] == head
    right, left = events[1][1]["comment"], events[2][1]["comment"]
    assert right["pull_request_review_id"] == left["pull_request_review_id"] == review["id"]
    assert (right["line"], right["side"], right["position"]) == (2, "RIGHT", 3)
    assert (left["line"], left["side"], left["position"]) == (2, "LEFT", 2)
    assert right["diff_hunk"] == (
        "@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b"
    )
    assert left["diff_hunk"] == "@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b"
    assert right["commit_id"] == head and "in_reply_to_id" not in right
    assert events[1][1]["pull_request"]["number"] == pull

    assert submitted.review["state"] == "CHANGES_REQUESTED"  # the REST spelling
    assert [c["body"] for c in github.review_comments(OWNER_REPO, pull)] == [
        "Keep the docstring",
        "Was a bug",
    ]
    assert [r["state"] for r in github.reviews(OWNER_REPO, pull)] == ["CHANGES_REQUESTED"]


def test_single_comment_comes_wrapped_in_its_own_review(
    github: GitHubSim, webhook_receiver: WebhookReceiver, pull: int
) -> None:
    comment, delivery = github.add_review_comment(
        OWNER_REPO, pull, "/codex rename", path="pkg/__init__.py", line=1
    )
    review_hook, comment_hook = (json.loads(h.body) for h in webhook_receiver.received)
    assert review_hook["review"]["state"] == "commented"
    assert review_hook["review"]["body"] is None
    assert comment_hook["comment"] == comment
    assert comment["pull_request_review_id"] == review_hook["review"]["id"]
    assert delivery.event == "pull_request_review_comment"


def test_bot_replies_in_the_thread(
    github: GitHubSim, gh: Github, pull: int, webhook_receiver: WebhookReceiver
) -> None:
    root, _ = github.add_review_comment(OWNER_REPO, pull, "nit", path="pkg/__init__.py", line=2)
    human, _ = github.reply_to_review_comment(OWNER_REPO, pull, root["id"], "/codex fix it")
    assert human["in_reply_to_id"] == root["id"]

    pr = gh.get_repo(OWNER_REPO).get_pull(pull)
    reply = pr.create_review_comment_reply(human["id"], "Fixed in abc123.")
    assert reply.in_reply_to_id == root["id"]  # a reply to a reply joins the thread's root
    assert reply.user.login == github.bot_login
    assert (reply.path, reply.line, reply.diff_hunk) == (root["path"], 2, root["diff_hunk"])
    assert reply.pull_request_review_id not in (root["pull_request_review_id"], None)
    assert [c["id"] for c in github.review_comments(OWNER_REPO, pull)] == [
        root["id"],
        human["id"],
        reply.id,
    ]
    bot_review = github.reviews(OWNER_REPO, pull)[-1]
    assert (bot_review["user"]["login"], bot_review["state"]) == (github.bot_login, "COMMENTED")
    comments_of_review = pr.get_single_review_comments(reply.pull_request_review_id)
    assert [c.id for c in comments_of_review] == [reply.id]
    # The bot's own reply is not delivered unless the test asks for that traffic.
    assert len(webhook_receiver.received) == 4
    github.echo_app_events = True
    again = pr.create_review_comment_reply(root["id"], "One more thing fixed.")
    github.wait_for_echoes()
    echoed = [json.loads(h.body) for h in webhook_receiver.received[4:]]
    assert sorted(p.get("comment", {}).get("id", 0) for p in echoed) == [0, again.id]
    assert {p["sender"]["login"] for p in echoed} == {github.bot_login}


def test_reply_errors_answer_like_github(github: GitHubSim, token: str, pull: int) -> None:
    root, _ = github.add_review_comment(OWNER_REPO, pull, "nit", path="pkg/__init__.py", line=2)
    base = f"/repos/{OWNER_REPO}/pulls"
    assert (
        api(github, "POST", f"{base}/{pull}/comments/999/replies", token, {"body": "x"}).status_code
        == 404
    )
    assert (
        api(
            github, "POST", f"{base}/99/comments/{root['id']}/replies", token, {"body": "x"}
        ).status_code
        == 404
    )
    empty = api(github, "POST", f"{base}/{pull}/comments/{root['id']}/replies", token, {"body": ""})
    assert empty.status_code == 422
    assert api(github, "GET", f"{base}/comments/{root['id']}", token).json()["body"] == "nit"
    assert api(github, "GET", f"{base}/{pull}/reviews/1", token).status_code == 404


def test_review_comment_reactions_are_listed_and_timed(
    github: GitHubSim, gh: Github, pull: int
) -> None:
    root, delivery = github.add_review_comment(
        OWNER_REPO, pull, "/codex fix", path="pkg/__init__.py", line=2
    )
    assert github.reaction_latency_ms(delivery) is None
    comment = gh.get_repo(OWNER_REPO).get_pull(pull).get_review_comment(root["id"])
    comment.create_reaction("eyes")
    assert [r.content for r in comment.get_reactions()] == ["eyes"]
    assert [r["content"] for r in github.reactions(OWNER_REPO, review_comment_id=root["id"])] == [
        "eyes"
    ]
    latency = github.reaction_latency_ms(delivery)
    assert latency is not None and 0 < latency < 10_000
    assert github.review_comments(OWNER_REPO, pull)[0]["reactions"]["eyes"] == 1


def test_reviews_github_would_refuse(github: GitHubSim, pull: int) -> None:
    with pytest.raises(SimError, match="not part of the diff"):
        github.submit_review(
            OWNER_REPO, pull, "x", comments=[{"path": "README.md", "line": 1, "body": "?"}]
        )
    with pytest.raises(SimError, match="own pull request"):
        github.submit_review(OWNER_REPO, pull, "ok", user=github.bot_login, state="approved")
    with pytest.raises(SimError, match="review state"):
        github.submit_review(OWNER_REPO, pull, "ok", state="merged")
    with pytest.raises(SimError):
        github.reply_to_review_comment(OWNER_REPO, pull, 12345, "hello")
    approved = github.submit_review(OWNER_REPO, pull, None, state="APPROVE")
    assert approved.review["state"] == "APPROVED" and approved.review["body"] == ""
