"""`/codex ask --repo`: related repositories of the same installation, read only when the asker
may read them and the App is installed there, through the real receiver, workers and simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.test_triggers import bot_comments, seed, task_of
from tests.workers.test_codemap import FIXTURES

pytestmark = [pytest.mark.docker, pytest.mark.slow]

QUESTION = "How does textstats relate to the shop?"


def shop_source(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    for name, text in FIXTURES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
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
