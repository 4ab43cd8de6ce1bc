"""`/codex ask --repo`: related repositories of the same installation, read only when the asker
may read them and the App is installed there, through the real receiver, workers and simulator."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sim.stack import DEMO_REPO
from tests.e2e.test_triggers import bot_comments, seed, task_of
from tests.workers.test_codemap import FIXTURES
from workers import text

pytestmark = [pytest.mark.docker, pytest.mark.slow]

QUESTION = "How does textstats relate to the shop?"


def shop_source(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    for name, source in FIXTURES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    return root


def test_ask_reads_only_the_related_repositories_the_asker_may_read(stack, tmp_path) -> None:
    number = seed(stack, tmp_path, "xr-main", "Cross-repository question")
    shop = shop_source(tmp_path)
    github = stack.github
    github.create_repo("octo-org/xr-shop", shop)  # same installation
    github.set_permission("octo-org/xr-shop", "octo-maintainer", "read")
    github.create_repo("octo-org/xr-hidden", shop)  # same installation, no access for the asker
    github.create_repo("other-org/xr-elsewhere", shop, installation_id=2)  # not this installation
    github.set_permission("other-org/xr-elsewhere", "octo-maintainer", "read")

    _, delivery = github.comment(
        "octo-org/xr-main",
        number,
        "/codex ask --repo octo-org/xr-shop --repo octo-org/xr-hidden "
        f"--repo other-org/xr-elsewhere {QUESTION}",
    )
    task_id = task_of(delivery)
    stack.task_ids.append(task_id)
    answer = stack.wait_for_task(task_id)["answer"]

    assert "textstats/core.py:4" in answer
    assert "octo-org/xr-shop:store/store.go:7" in answer
    assert "octo-org/xr-shop:cmd/server/main.go:8" in answer
    assert "xr-hidden:" not in answer and "xr-elsewhere:" not in answer
    body = stack.model.chat_requests_for(QUESTION)[-1]["body"]
    prompt = body["messages"][1]["content"]
    assert f"```text\n{QUESTION}\n```" in prompt  # the question, without its options
    assert "`octo-org/xr-shop`" in prompt
    assert "octo-org/xr-hidden: @octo-maintainer has no read access" in prompt
    assert "other-org/xr-elsewhere: the App is not installed there" in prompt
    shown = [m["content"] for m in body["messages"] if m["role"] == "tool"]
    assert "Repository octo-org/xr-shop (read-only" in shown[0]
    assert "octo-org/xr-shop:cmd/server/main.go:8" in shown[1]
    assert "`octo-org/xr-hidden` is not a repository of this task" in shown[2]
    comment = bot_comments(stack, "octo-org/xr-main", number)[0]["body"]
    assert "octo-org/xr-shop:store/store.go:7" in comment


FIX_TITLE = "Count words the way the shop's store counts its name"


def test_a_fix_task_reads_a_related_repository_and_changes_only_its_own(stack, tmp_path) -> None:
    github = stack.github
    github.create_repo("octo-org/xr-fix-shop", shop_source(tmp_path))
    github.set_permission("octo-org/xr-fix-shop", "octo-maintainer", "read")
    repo = tmp_path / "xr-fix-repo"
    shutil.copytree(DEMO_REPO, repo, ignore=shutil.ignore_patterns("issue.md"))
    (repo / ".github").mkdir()
    (repo / ".github" / "codex.yml").write_text("repos: [octo-org/xr-fix-shop]\n")
    issue_file = tmp_path / "xr-fix.md"
    issue_file.write_text(f"{FIX_TITLE}\nSee title.\n")
    _, issue = stack.seed(repo, issue_file, full_name="octo-org/xr-fix")
    _, task_id = stack.label("octo-org/xr-fix", issue["number"])

    outcome = stack.wait_for_task(task_id)

    assert outcome["pr_url"].startswith(f"{github.url}/octo-org/xr-fix/pull/")
    assert "diff --git a/textstats/core.py b/textstats/core.py" in outcome["patch"]
    assert "store/" not in outcome["patch"]  # what it read elsewhere is not its change
    assert outcome["tests_after"]["exit_code"] == 0
    body = stack.model.chat_requests_for(FIX_TITLE)[-1]["body"]
    shown = [m["content"] for m in body["messages"] if m["role"] == "tool"]
    assert shown[0].startswith("octo-org/xr-fix-shop:store/store.go: lines 1-9 of 9")
    assert "func Open() *Store" in shown[0]
    assert len(github.pulls("octo-org/xr-fix")) == 1
    assert github.pulls("octo-org/xr-fix-shop") == []
    branch = text.branch_name(issue["number"], FIX_TITLE)
    assert github.branch_sha("octo-org/xr-fix", branch) is not None
    assert github.branch_sha("octo-org/xr-fix-shop", branch) is None
