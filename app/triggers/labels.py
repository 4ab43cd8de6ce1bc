"""The trigger label: a maintainer labels an issue (or opens one already labelled)."""

from __future__ import annotations

from app.requests import enqueue_intake, field
from app.router import Context, Delivery, Enqueued, Router

router = Router()


def _label_names(issue: object) -> set[str]:
    labels = field(issue, "labels") if isinstance(issue, dict) else None
    if not isinstance(labels, list):
        return set()
    return {name for label in labels if isinstance(name := field(label, "name"), str)}


def _open_issue(delivery: Delivery) -> bool:
    issue = delivery.payload.get("issue")
    if not isinstance(issue, dict):
        return False
    return "pull_request" not in issue and issue.get("state") != "closed"


@router.register("issues", action="labeled")
def enqueue_fix_for_labeled_issue(delivery: Delivery, context: Context) -> Enqueued | None:
    if field(delivery.payload, "label", "name") != context.settings.codex_trigger_label:
        return None
    if not _open_issue(delivery):
        return None
    return enqueue_intake(context, delivery, kind="fix", is_pull=False)


@router.register("issues", action="opened")
def enqueue_fix_for_issue_opened_with_label(
    delivery: Delivery, context: Context
) -> Enqueued | None:
    issue = delivery.payload.get("issue")
    if context.settings.codex_trigger_label not in _label_names(issue):
        return None
    if not _open_issue(delivery):
        return None
    return enqueue_intake(context, delivery, kind="fix", is_pull=False)
