"""A signed ``issues.labeled`` delivery becomes a pull request, as a user would see it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sim.stack import DEMO_REPO, Stack, wait_until
from workers.text import MARKER

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def task_containers(docker_client, task_id: str) -> list:
    return docker_client.containers.list(
        all=True, filters={"label": f"codexbot.task={task_id}"}, ignore_removed=True
    )


def task_volumes(docker_client, task_id: str) -> list:
    return docker_client.volumes.list(filters={"label": f"codexbot.task={task_id}"})


def grep_in_container(docker_client, container_id: str, patterns: list[str]) -> tuple[bytes, int]:
    """Search the container's whole filesystem for any of ``patterns``, given on stdin so that
    no secret appears on a command line inside it. grep exits 1 when nothing matched."""
    api = docker_client.api
    command = ["grep", "-rlF", "--exclude-dir=proc", "--exclude-dir=sys", "-f", "/dev/stdin", "/"]
    exec_id = api.exec_create(container_id, command, user="0", stdin=True)["Id"]
    sock = api.exec_start(exec_id, socket=True)
    raw = sock._sock
    raw.sendall("\n".join(patterns).encode() + b"\n")
    raw.shutdown(socket.SHUT_WR)
    output = b""
    while chunk := raw.recv(65536):
        output += chunk
    sock.close()
    return output, api.exec_inspect(exec_id)["ExitCode"]


def seed_issue(stack: Stack, name: str, title: str, body: str, tmp_path: Path) -> tuple[str, int]:
    issue_file = tmp_path / f"{name}.md"
    issue_file.write_text(f"{title}\n{body}\n")
    repo = tmp_path / f"{name}-repo"
    import shutil

    shutil.copytree(DEMO_REPO, repo, ignore=shutil.ignore_patterns("issue.md"))
    full_name, issue = stack.seed(repo, issue_file, full_name=f"octo-org/{name}")
    return full_name, issue["number"]


@pytest.fixture(scope="module")
def fixed(stack: Stack, docker_client):
    """The demo issue, labelled once, run to its pull request."""
    full_name, issue = stack.seed()
    delivery, task_id = stack.label(full_name, issue["number"])
    outcome = stack.wait_for_task(task_id, timeout=300)
    return {
        "repo": full_name,
        "issue": issue,
        "delivery": delivery,
        "task_id": task_id,
        "outcome": outcome,
    }


def test_labeled_issue_becomes_a_pull_request_that_fixes_the_bug(stack, fixed, tmp_path):
    pulls = stack.github.pulls(fixed["repo"])
    assert len(pulls) == 1
    pull = pulls[0]
    number = fixed["issue"]["number"]
    assert pull["head"]["ref"] == f"codex/issue-{number}-word-count-miscounts-text-with-repeated"
    assert pull["base"]["ref"] == "main"
    assert pull["draft"] is False
    assert [r["login"] for r in pull["requested_reviewers"]] == ["octo-maintainer"]
    assert [label["name"] for label in pull["labels"]] == ["codex"]
    assert f"Fixes #{number}" in pull["body"]
    assert pull["body"].startswith("## Summary")  # no template in this repository
    assert "python3 -m pytest -q" in pull["body"]

    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", str(stack.github.bare_repo_path(fixed["repo"])), str(clone)],
        check=True,
    )
    git(clone, "checkout", "-q", pull["head"]["ref"])
    assert git(clone, "rev-list", "--count", "main..HEAD") == "1"
    assert "text.split()" in (clone / "textstats" / "core.py").read_text()
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=clone,
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout

    message = git(clone, "log", "-1", "--format=%B")
    subject, blank, *body = message.splitlines()
    assert subject == "Count words on any whitespace in word_count"
    assert len(subject) <= 72 and not subject.endswith(".")
    assert blank == ""
    assert all(len(line) <= 72 for line in body)
    assert body[-1] == f"Fixes #{number}"
    assert git(clone, "log", "-1", "--format=%an") == "codex-bot[bot]"


def test_the_issue_gets_one_comment_linking_the_pr(stack, fixed):
    comments = stack.github.issue_comments(fixed["repo"], fixed["issue"]["number"])
    assert len(comments) == 1
    pull = stack.github.pulls(fixed["repo"])[0]
    assert pull["html_url"] in comments[0]["body"]
    assert MARKER in comments[0]["body"]


def test_the_task_shows_a_check_run_on_the_commit_it_made(stack, fixed):
    sha = fixed["outcome"]["sha"]
    (check,) = stack.github.check_runs(fixed["repo"], sha)
    assert (check["name"], check["status"], check["conclusion"]) == (
        "codex-bot",
        "completed",
        "success",
    )
    assert check["output"]["title"] == "✅ Done"
    assert fixed["outcome"]["pr_url"] in check["output"]["summary"]
    assert stack.github.check_runs(fixed["repo"], "main") == []  # not on the commit it started from


def test_tests_ran_before_and_after_in_the_sandbox(fixed):
    outcome = fixed["outcome"]
    assert outcome["tests_before"] == {"command": "python3 -m pytest -q", "exit_code": 1}
    assert outcome["tests_after"] == {"command": "python3 -m pytest -q", "exit_code": 0}
    assert '-    return len(text.split(" "))' in outcome["patch"]


def test_the_same_delivery_twice_yields_one_job_and_one_pr(stack, fixed):
    sent = next(
        hook
        for hook in stack.github.webhooks
        if hook.delivery.delivery_id == fixed["delivery"].delivery_id
    )
    again = stack.github.deliver(
        sent.delivery.event, sent.payload, delivery_id=sent.delivery.delivery_id
    )
    assert again.status_code == 202
    assert json.loads(again.response_body) == {"task_id": fixed["task_id"], "duplicate": True}
    from rq import Queue

    assert len(Queue(stack.queue, connection=stack.redis)) == 0
    assert len(stack.github.pulls(fixed["repo"])) == 1


def test_no_container_or_volume_of_the_task_remains(docker_client, fixed):
    assert task_containers(docker_client, fixed["task_id"]) == []
    assert task_volumes(docker_client, fixed["task_id"]) == []


def test_a_task_that_changes_nothing_fails_visibly_and_cleans_up(stack, docker_client, tmp_path):
    full_name, number = seed_issue(stack, "quiet", "Nothing to change here", "Look only.", tmp_path)
    _, task_id = stack.label(full_name, number)
    with pytest.raises(Exception, match="without changing any file"):
        stack.wait_for_task(task_id, timeout=300)
    comments = stack.github.issue_comments(full_name, number)
    assert len(comments) == 1
    assert "without changing any file" in comments[0]["body"]
    assert stack.github.pulls(full_name) == []
    assert task_containers(docker_client, task_id) == []


def test_no_secret_reaches_the_sandbox_or_anything_a_user_sees(stack, docker_client, tmp_path):
    full_name, number = seed_issue(
        stack, "audit", "Audit the sandbox for secrets", "Print the environment.", tmp_path
    )
    _, task_id = stack.label(full_name, number)

    from workers import tasks

    wait_until(  # the agent phase: its container is the one the agent works in
        lambda: (record := tasks.load(stack.redis, task_id)) and record.state == "running",
        120,
        "the agent to start",
    )
    container = wait_until(
        lambda: next(iter(task_containers(docker_client, task_id)), None),
        120,
        "the task's container",
    )
    secrets = dict(stack.secrets())
    wait_until(lambda: stack.github.state.tokens, 30, "an installation token")
    for index, token in enumerate(stack.github.state.tokens):
        secrets[f"installation_token_{index}"] = token
    key_lines = [line for line in secrets["private_key"].splitlines() if "-----" not in line]
    secrets["private_key_line"] = key_lines[1]

    # The agent is in its second command now (waiting for /tmp/audited), so nothing of ours
    # is killed as a leftover of its first.
    wait_until(
        lambda: len(stack.model.chat_requests_for("Audit the sandbox for secrets")) >= 2,
        60,
        "the agent's second step",
    )
    inside = {"env": "\n".join(container.attrs["Config"]["Env"])}
    patterns = [value for value in secrets.values() if "\n" not in value]  # the key by its lines
    matches, exit_code = grep_in_container(docker_client, container.id, patterns)
    assert exit_code == 1, f"grep found secrets or failed ({exit_code}): {matches[:500]!r}"
    environ = container.exec_run(["sh", "-c", "cat /proc/*/environ | tr '\\0' '\\n'"], user="0")
    inside["proc_environ"] = environ.output.decode(errors="replace")
    container.exec_run(["touch", "/tmp/audited"])
    outcome = stack.wait_for_task(task_id, timeout=300)

    pull = stack.github.pulls(full_name)[0]
    seen = {
        **inside,
        "pr": json.dumps(pull),
        "patch": outcome["patch"],
        "commit": outcome["commit_message"],
        "comments": json.dumps(stack.github.issue_comments(full_name, number)),
        "logs": stack.logs(),
        "trajectory": "\n".join(
            json.dumps(r, ensure_ascii=False) for r in stack.trajectory(task_id)
        ),
        "model_requests": json.dumps(stack.model.requests if stack.model else []),
    }
    assert "waited" in seen["trajectory"]
    for where, text in seen.items():
        for name, value in secrets.items():
            at = text.find(value)
            assert at < 0, f"{name} leaked into {where}: ...{text[max(0, at - 300) : at + 50]}"


def test_everything_the_bot_and_simulator_exchanged_matches_githubs_openapi(stack, fixed):
    """The bot's requests and the simulator's answers, checked against GitHub's descriptions,
    so neither can drift from real GitHub unnoticed."""
    from tests.openapi.validate import validate_recorded, validate_webhook

    api_calls = [r for r in stack.github.requests if r.path.startswith("/api/v3/")]
    for recorded in stack.github.requests:
        validate_recorded(recorded)
    for sent in stack.github.webhooks:
        validate_webhook(sent.delivery.event, sent.payload.get("action"), sent.payload)
    assert {(r.method, r.status) for r in api_calls} >= {("POST", 201), ("GET", 200)}


def test_a_refused_change_is_told_to_the_agent_at_once_and_named_in_the_pr(stack, tmp_path):
    full_name, number = seed_issue(
        stack, "guarded", "Change the CI workflow and the change log", "Both, please.", tmp_path
    )
    _, task_id = stack.label(full_name, number)
    outcome = stack.wait_for_task(task_id, timeout=300)
    assert outcome["changed_files"] == ["CHANGES.md"]
    assert outcome["steered"] == 0, "the bot's own notes are not people's comments"
    requests = stack.model.chat_requests_for("Change the CI workflow and the change log")
    # told with the result of the command that made the change, by the bot, not as a comment
    result = requests[1]["body"]["messages"][-1]
    assert result["role"] == "tool"
    assert ".github/workflows/ci.yml" in result["content"] and "refused" in result["content"]
    told = json.dumps(requests[-1]["body"]["messages"])
    assert "@codex-bot (admin access)" not in told, "no comment in the bot's name"
    pull = stack.github.pulls(full_name)[0]
    assert "`.github/workflows/ci.yml` was left out" in pull["body"]


TEMPLATE = """## What does this change?
<!-- Describe the change and why. -->

## Checklist
- [ ] I added tests
- [ ] I updated the docs
"""


def test_the_pull_request_follows_the_repositorys_template(stack, tmp_path):
    repo = tmp_path / "templated"
    shutil.copytree(DEMO_REPO, repo, ignore=shutil.ignore_patterns("issue.md"))
    (repo / ".github").mkdir()
    (repo / ".github" / "pull_request_template.md").write_text(TEMPLATE)
    full_name, issue = stack.seed(repo, DEMO_REPO / "issue.md", full_name="octo-org/templated")
    stack.wait_for_task(stack.label(full_name, issue["number"])[1], timeout=300)
    (pull,) = stack.github.pulls(full_name)
    body = pull["body"]
    assert body.startswith("## What does this change?\n\n")
    summary = body.split("\n\n")[1]
    assert summary and "<!--" not in summary and "Checklist" not in summary
    assert body.index("<!-- Describe the change and why. -->") < body.index("## Checklist")
    assert "- [ ] I added tests\n- [ ] I updated the docs" in body
    assert body.index("## Checklist") < body.index("## Changes") < body.index("## Tests")
    assert "## Summary" not in body and f"Fixes #{issue['number']}" in body
    assert "codex" in [label["name"] for label in pull["labels"]]
