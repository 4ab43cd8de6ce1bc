"""Every way a maintainer asks, through signed deliveries to the real receiver and workers."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import docker
import pytest
from rq import Queue

from codexbot.commands import MARKER
from sim.stack import DEMO_REPO, Stack, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def seed(stack: Stack, tmp_path: Path, name: str, title: str, body: str = "See title.") -> int:
    repo = tmp_path / f"{name}-repo"
    shutil.copytree(DEMO_REPO, repo, ignore=shutil.ignore_patterns("issue.md"))
    issue_file = tmp_path / f"{name}.md"
    issue_file.write_text(f"{title}\n{body}\n")
    _, issue = stack.seed(repo, issue_file, full_name=f"octo-org/{name}")
    return issue["number"]


def task_of(delivery) -> str:
    assert delivery.status_code == 202, delivery.response_body
    return json.loads(delivery.response_body)["task_id"]


def bot_comments(stack: Stack, repo: str, number: int) -> list[dict]:
    return [c for c in stack.github.issue_comments(repo, number) if MARKER in c["body"]]


def intake_result(stack: Stack, task_id: str):
    from rq.job import Job

    job = wait_until(
        lambda: (j := Job.fetch(f"intake-{task_id}", connection=stack.redis)).is_finished and j,
        30,
        "the intake lane",
    )
    return job.return_value()


def release(stack: Stack, docker_client, task_id: str) -> None:
    """Let a blocking script's first command finish (it waits for /tmp/go)."""
    container = wait_until(
        lambda: next(
            iter(
                docker_client.containers.list(
                    filters={"label": f"codexbot.task={task_id}"}, ignore_removed=True
                )
            ),
            None,
        ),
        60,
        f"the container of {task_id}",
    )
    # The task may have ended first (superseded or stopped): then there is nothing to release.
    with contextlib.suppress(docker.errors.APIError):
        container.exec_run(["touch", "/tmp/go"])


def wait_state(stack: Stack, task_id: str, state: str, timeout: float = 60) -> None:
    from workers import tasks

    wait_until(
        lambda: (record := tasks.load(stack.redis, task_id)) is not None and record.state == state,
        timeout,
        f"task {task_id} to be {state}",
    )


def no_tasks_queued(stack: Stack) -> bool:
    return len(Queue(stack.queue, connection=stack.redis)) == 0


def test_fix_command_runs_one_task_with_one_progress_comment_and_reactions(stack, tmp_path):
    number = seed(stack, tmp_path, "cmd-fix", "Append a line to the change log")
    comment, delivery = stack.github.comment("octo-org/cmd-fix", number, "Please.\n/codex fix")
    task_id = task_of(delivery)
    stack.task_ids.append(task_id)
    outcome = stack.wait_for_task(task_id)
    pulls = stack.github.pulls("octo-org/cmd-fix")
    assert [p["html_url"] for p in pulls] == [outcome["pr_url"]]
    comments = bot_comments(stack, "octo-org/cmd-fix", number)
    assert len(comments) == 1, "one progress comment, edited in place"
    assert "✅ Done" in comments[0]["body"] and outcome["pr_url"] in comments[0]["body"]
    reactions = [
        r["content"] for r in stack.github.reactions("octo-org/cmd-fix", comment_id=comment["id"])
    ]
    assert reactions[:1] == ["eyes"] and "rocket" in reactions
    eyes = stack.github.reaction_records("octo-org/cmd-fix", comment_id=comment["id"])[0]
    first_model_call = stack.model.chat_requests_for("Append a line to the change log")[0]
    assert eyes.unix_ms / 1000 < first_model_call["time"], "👀 comes before the agent starts"


def test_ask_command_answers_in_the_progress_comment_and_changes_nothing(stack, tmp_path):
    number = seed(stack, tmp_path, "cmd-ask", "Where is word_count defined")
    _, delivery = stack.github.comment(
        "octo-org/cmd-ask", number, "/codex ask where is word_count defined?"
    )
    task_id = task_of(delivery)
    stack.task_ids.append(task_id)
    outcome = stack.wait_for_task(task_id)
    assert "textstats/core.py:4" in outcome["answer"]
    assert stack.github.pulls("octo-org/cmd-ask") == []
    comments = bot_comments(stack, "octo-org/cmd-ask", number)
    assert len(comments) == 1 and "✅ Done" in comments[0]["body"]
    assert "textstats/core.py:4" in comments[0]["body"]


@pytest.mark.parametrize(
    ("body", "reply"),
    [
        ("/codex help", "/codex fix [--attempts N] [instructions]"),
        ("/codex dance", "I don't know the command `/codex dance`"),
    ],
)
def test_help_and_unknown_commands_get_a_reply_and_no_task(stack, tmp_path, body, reply):
    name = "help" if "help" in body else "unknown"
    number = seed(stack, tmp_path, name, "Nothing to change here")
    _, delivery = stack.github.comment(f"octo-org/{name}", number, body)
    task_id = task_of(delivery)
    assert intake_result(stack, task_id) in ("help", "unknown")
    comments = bot_comments(stack, f"octo-org/{name}", number)
    assert len(comments) == 1 and reply in comments[0]["body"]
    assert no_tasks_queued(stack)


@pytest.mark.parametrize(
    "body",
    [
        "Just a thought, no command.",
        "> /codex fix\nQuoting the earlier request.",
        "Try this:\n```\n/codex fix\n```",
        "please /codex fix",
    ],
)
def test_comments_without_a_live_command_start_nothing(stack, tmp_path, body):
    name = f"quiet-{abs(hash(body)) % 10**6}"
    number = seed(stack, tmp_path, name, "Nothing to change here")
    _, delivery = stack.github.comment(f"octo-org/{name}", number, body)
    assert delivery.status_code == 204, delivery.response_body


def test_bots_are_ignored(stack, tmp_path):
    number = seed(stack, tmp_path, "bot-author", "Nothing to change here")
    stack.github.add_user("ci-helper[bot]", type="Bot")
    stack.github.set_permission("octo-org/bot-author", "ci-helper[bot]", "write")
    _, delivery = stack.github.comment(
        "octo-org/bot-author", number, "/codex fix", user="ci-helper[bot]"
    )
    assert delivery.status_code == 204


def test_a_reader_gets_one_polite_reply_and_no_task(stack, tmp_path):
    number = seed(stack, tmp_path, "reader", "Nothing to change here")
    stack.github.set_permission("octo-org/reader", "curious-reader", "read")
    _, delivery = stack.github.comment(
        "octo-org/reader", number, "/codex fix", user="curious-reader"
    )
    task_id = task_of(delivery)
    assert intake_result(stack, task_id) == "not allowed"
    comments = bot_comments(stack, "octo-org/reader", number)
    assert len(comments) == 1
    assert "Only people with write, maintain or admin access" in comments[0]["body"]
    assert no_tasks_queued(stack)


def test_redelivery_and_unchanged_edit_do_nothing_and_an_edit_adding_a_command_counts_once(
    stack, tmp_path
):
    number = seed(stack, tmp_path, "edits", "Append a line to the change log")
    comment, first = stack.github.comment("octo-org/edits", number, "Looks odd.")
    assert first.status_code == 204
    added = stack.github.edit_comment(comment["id"], "Looks odd.\n/codex fix")
    task_id = task_of(added)
    stack.task_ids.append(task_id)
    again = stack.github.edit_comment(comment["id"], "Looks odd!\n/codex fix")
    assert again.status_code == 204
    sent = next(h for h in stack.github.webhooks if h.delivery.delivery_id == added.delivery_id)
    redelivered = stack.github.deliver("issue_comment", sent.payload, delivery_id=added.delivery_id)
    assert json.loads(redelivered.response_body)["duplicate"] is True
    stack.wait_for_task(task_id)
    assert len(stack.github.pulls("octo-org/edits")) == 1


def test_newer_request_supersedes_the_running_task(stack, tmp_path, docker_client):
    number = seed(stack, tmp_path, "supersede", "Slow fix that waits for the test")
    first = task_of(stack.github.add_label("octo-org/supersede", number, "codex"))
    stack.task_ids.append(first)
    wait_state(stack, first, "running")
    _, delivery = stack.github.comment("octo-org/supersede", number, "/codex fix")
    second = task_of(delivery)
    stack.task_ids.append(second)
    wait_until(lambda: intake_result(stack, second) == "fix", 30, "the second request's intake")
    release(stack, docker_client, first)
    assert stack.wait_for_task(first)["status"] == "stopped"
    release(stack, docker_client, second)
    outcome = stack.wait_for_task(second)
    assert outcome["pr_url"]
    bodies = [c["body"] for c in bot_comments(stack, "octo-org/supersede", number)]
    assert any("⏹️ Stopped" in b and f"superseded by task `{second}`" in b for b in bodies)
    assert any("✅ Done" in b for b in bodies)
    assert (
        docker_client.containers.list(
            all=True, filters={"label": f"codexbot.task={first}"}, ignore_removed=True
        )
        == []
    )


def test_stop_command_stops_the_running_task(stack, tmp_path, docker_client):
    number = seed(stack, tmp_path, "stopping", "Slow fix that waits for the test")
    task_id = task_of(stack.github.add_label("octo-org/stopping", number, "codex"))
    stack.task_ids.append(task_id)
    wait_state(stack, task_id, "running")
    _, delivery = stack.github.comment("octo-org/stopping", number, "/codex stop")
    assert intake_result(stack, task_of(delivery)) == "stop"
    release(stack, docker_client, task_id)
    assert stack.wait_for_task(task_id)["status"] == "stopped"
    bodies = [c["body"] for c in bot_comments(stack, "octo-org/stopping", number)]
    # The name is shown, but not as a live mention: no second notification for the same stop.
    assert any("stopped by @\u200docto-maintainer" in b for b in bodies)
    assert stack.github.pulls("octo-org/stopping") == []


def test_a_comment_while_the_task_runs_reaches_the_agent(stack, tmp_path, docker_client):
    number = seed(stack, tmp_path, "steer", "Slow fix that waits for the test")
    task_id = task_of(stack.github.add_label("octo-org/steer", number, "codex"))
    stack.task_ids.append(task_id)
    wait_state(stack, task_id, "running")
    _, delivery = stack.github.comment("octo-org/steer", number, "Also keep CHANGES.md sorted.")
    assert delivery.status_code == 202
    assert intake_result(stack, task_of(delivery)) == "steer"
    release(stack, docker_client, task_id)
    outcome = stack.wait_for_task(task_id)
    assert outcome["steered"] == 1
    shown = json.dumps(stack.model.chat_requests_for("Slow fix that waits for the test"))
    assert "Also keep CHANGES.md sorted." in shown and "untrusted data" in shown
    progress = bot_comments(stack, "octo-org/steer", number)[0]["body"]
    assert "Took 1 new comment into account" in progress


def test_asking_again_updates_the_existing_pr_with_a_new_commit(stack, tmp_path):
    number = seed(stack, tmp_path, "again", "Append a line to the change log")
    first = stack.wait_for_task(task_of(stack.github.add_label("octo-org/again", number, "codex")))
    _, delivery = stack.github.comment("octo-org/again", number, "/codex fix once more")
    second = stack.wait_for_task(task_of(delivery))
    pulls = stack.github.pulls("octo-org/again")
    assert len(pulls) == 1 and second["pr_url"] == first["pr_url"] == pulls[0]["html_url"]
    bare = stack.github.bare_repo_path("octo-org/again")
    log = subprocess.run(
        ["git", "--git-dir", str(bare), "log", "--format=%H", f"main..{first['branch']}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert log == [second["sha"], first["sha"]], "a second commit on top, never a force-push"


@pytest.fixture(scope="module")
def bot_pull(stack):
    """The demo issue fixed once: a PR the bot opened, for review follow-ups."""
    full_name, issue = stack.seed(full_name="octo-org/reviewed")
    _, task_id = stack.label(full_name, issue["number"])
    outcome = stack.wait_for_task(task_id)
    number = int(outcome["pr_url"].rsplit("/", 1)[1])
    return {"repo": full_name, "number": number, "branch": outcome["branch"], "sha": outcome["sha"]}


def commits_on(stack: Stack, repo: str, branch: str) -> list[str]:
    bare = stack.github.bare_repo_path(repo)
    return subprocess.run(
        ["git", "--git-dir", str(bare), "log", "--format=%H", f"main..{branch}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def test_review_asking_for_changes_adds_a_commit_and_replies_in_its_thread(stack, bot_pull):
    repo, number = bot_pull["repo"], bot_pull["number"]
    before = commits_on(stack, repo, bot_pull["branch"])
    review = stack.github.submit_review(
        repo,
        number,
        "Please mention whitespace in the docstring of word_count.",
        state="changes_requested",
        comments=[{"path": "textstats/core.py", "line": 8, "body": "Say how words are split."}],
    )
    assert [d.status_code for d in review.deliveries] == [202, 204]  # the comment has no command
    task_ids = {task_of(review.deliveries[0])}
    stack.task_ids.extend(task_ids)
    started = [t for t in task_ids if intake_result(stack, t) == "review"]
    assert len(started) == 1, "one review, one follow-up, however many events it sent"
    outcome = stack.wait_for_task(started[0])
    after = commits_on(stack, repo, bot_pull["branch"])
    assert after == [outcome["sha"], *before], "a new commit on the same branch, no force-push"
    assert len(stack.github.pulls(repo)) == 1
    thread = [
        c
        for c in stack.github.review_comments(repo, number)
        if c.get("in_reply_to_id") == review.comments[0]["id"]
    ]
    assert len(thread) == 1 and "Addressed in" in thread[0]["body"]
    summary = bot_comments(stack, repo, number)
    assert len(summary) == 1 and "✅ Done" in summary[0]["body"]
    shown = json.dumps(stack.model.chat_requests_for("Please mention whitespace in the docstring"))
    assert "Say how words are split." in shown and "textstats/core.py" in shown


def test_a_branch_moved_by_a_human_is_not_pushed_over(stack, bot_pull, docker_client):
    repo, number, branch = bot_pull["repo"], bot_pull["number"], bot_pull["branch"]
    review = stack.github.submit_review(
        repo, number, "Please wait before you change the docstring.", state="changes_requested"
    )
    task_id = task_of(review.deliveries[0])
    stack.task_ids.append(task_id)
    wait_state(stack, task_id, "running")
    human = stack.github.push_as(repo, branch, {"NOTES.md": "mine\n"}, "Add my notes")
    release(stack, docker_client, task_id)
    assert stack.wait_for_task(task_id)["status"] == "stopped"
    assert stack.github.branch_sha(repo, branch) == human
    progress = bot_comments(stack, repo, number)[-1]["body"]
    assert "moved while I worked" in progress and "did not push over it" in progress


def test_a_pull_request_from_a_fork_gets_a_branch_here(stack, tmp_path):
    number = seed(stack, tmp_path, "forked", "Nothing to change here")
    assert number
    stack.github.create_fork("octo-org/forked", "contributor")
    stack.github.push_as(
        "contributor/forked", "feature", {"idea.txt": "idea\n"}, "Add an idea", author="contributor"
    )
    pull = stack.github.open_pull(
        "octo-org/forked", "contributor:feature", "Add an idea", user="contributor"
    )
    _, delivery = stack.github.comment(
        "octo-org/forked", pull["number"], "/codex fix Append a line to the change log"
    )
    task_id = task_of(delivery)
    stack.task_ids.append(task_id)
    outcome = stack.wait_for_task(task_id)
    assert outcome["branch"] == f"codex/pr-{pull['number']}"
    assert stack.github.branch_sha("contributor/forked", "feature") == pull["head"]["sha"]
    replies = [c["body"] for c in bot_comments(stack, "octo-org/forked", pull["number"])]
    assert any("comes from the fork contributor/forked" in body for body in replies)
    opened = [
        p for p in stack.github.pulls("octo-org/forked") if p["head"]["ref"] == outcome["branch"]
    ]
    assert len(opened) == 1 and opened[0]["head"]["repo"]["full_name"] == "octo-org/forked"


def test_a_trusted_bot_may_ask(tmp_path, redis_url):
    """CODEX_TRUSTED_BOTS lets a CI app ask for a fix; other bots stay ignored (see above)."""
    from sim.stack import DEMO_SCRIPTS

    scripts = (DEMO_SCRIPTS, Path(__file__).parent / "scripts")
    with Stack(
        data_dir=tmp_path / "stack",
        redis_url=redis_url,
        script_dirs=scripts,
        trusted_bots="ci-helper[bot]",
    ) as trusted:
        number = seed(trusted, tmp_path, "trusted", "Append a line to the change log")
        trusted.github.add_user("ci-helper[bot]", type="Bot")
        _, delivery = trusted.github.comment(
            "octo-org/trusted", number, "/codex fix", user="ci-helper[bot]"
        )
        task_id = task_of(delivery)
        trusted.task_ids.append(task_id)
        assert trusted.wait_for_task(task_id)["pr_url"]


def test_a_run_that_hits_its_limit_opens_a_draft_and_a_later_fix_resumes_it(stack, tmp_path):
    repo_dir = tmp_path / "limited-repo"
    shutil.copytree(DEMO_REPO, repo_dir, ignore=shutil.ignore_patterns("issue.md"))
    (repo_dir / ".github").mkdir()
    (repo_dir / ".github" / "codex.yml").write_text("limits:\n  steps: 2\n")
    issue_file = tmp_path / "limited.md"
    issue_file.write_text("Work that runs out of steps\nIt takes more steps than allowed.\n")
    full_name, issue = stack.seed(repo_dir, issue_file, full_name="octo-org/limited")
    _, task_id = stack.label(full_name, issue["number"])
    first = stack.wait_for_task(task_id)
    assert first["status"] == "limits_exceeded" and first["draft"] is True
    pull = stack.github.pulls(full_name)[0]
    assert pull["draft"] is True
    assert pull["body"].splitlines()[0].startswith("**Draft")
    assert "limit" in pull["body"].splitlines()[0]

    _, delivery = stack.github.comment(
        full_name, pull["number"], "/codex fix Please add the second half"
    )
    resumed = stack.wait_for_task(task_of(delivery))
    assert resumed["branch"] == first["branch"]
    assert commits_on(stack, full_name, first["branch"]) == [resumed["sha"], first["sha"]]
    bare = stack.github.bare_repo_path(full_name)
    changes = subprocess.run(
        ["git", "--git-dir", str(bare), "show", f"{first['branch']}:CHANGES.md"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert changes == "- first half\n- second half\n"


def test_what_the_agents_commands_ran_into_is_reported_in_the_pr(stack, tmp_path):
    number = seed(stack, tmp_path, "fill-tmp", "Fill the scratch space and log it")
    outcome = stack.wait_for_task(
        task_of(stack.github.add_label("octo-org/fill-tmp", number, "codex"))
    )
    pull = next(
        p for p in stack.github.pulls("octo-org/fill-tmp") if p["html_url"] == outcome["pr_url"]
    )
    assert "/tmp is full" in pull["body"]
    assert "CHANGES.md" in outcome["changed_files"]
