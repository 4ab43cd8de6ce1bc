"""Red CI on a pull request the bot opened: back to work on its branch, when the repository's
policy says `fix_ci: true` (the intake lane reads it, checks the PR is the App's and counts the
rounds). GitHub Actions reports as `workflow_run`; other CI apps as check suites."""

from __future__ import annotations

from typing import Any

from app.requests import enqueue_intake, field, text_field
from app.router import Context, Delivery, Enqueued, Router
from app.triggers.reviews import BOT_BRANCH_PREFIX

router = Router()
FAILED = ("failure", "timed_out")
ACTIONS_APP = "github-actions"  # its suites are reported again as workflow runs


def _enqueue_ci_fix(delivery: Delivery, context: Context, run: Any, source: str) -> Enqueued | None:
    if field(run, "conclusion") not in FAILED:
        return None
    if not text_field(run, "head_branch").startswith(BOT_BRANCH_PREFIX):
        return None
    pulls = field(run, "pull_requests")
    numbers = [field(pull, "number") for pull in pulls] if isinstance(pulls, list) else []
    number = next((n for n in numbers if isinstance(n, int)), None)
    run_id, sha = field(run, "id"), text_field(run, "head_sha")
    if number is None or not isinstance(run_id, int) or not sha:
        return None
    return enqueue_intake(
        context,
        delivery,
        kind="fix_ci",
        is_pull=True,
        number=number,
        text=f"{source} {run_id} {sha}",
    )


@router.register("workflow_run", action="completed")
def enqueue_fix_for_failed_workflow_run(delivery: Delivery, context: Context) -> Enqueued | None:
    return _enqueue_ci_fix(delivery, context, delivery.payload.get("workflow_run"), "workflow_run")


@router.register("check_suite", action="completed")
def enqueue_fix_for_failed_check_suite(delivery: Delivery, context: Context) -> Enqueued | None:
    suite = delivery.payload.get("check_suite")
    app_id = field(suite, "app", "id")
    if field(suite, "app", "slug") == ACTIONS_APP or app_id == context.settings.github_app_id:
        return None  # Actions: its workflow_run says it; ours: our own check runs
    return _enqueue_ci_fix(delivery, context, suite, "check_suite")
