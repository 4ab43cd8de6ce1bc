"""A plain comment on an issue or PR whose task is running reaches the agent at its next step."""

from __future__ import annotations

from app.requests import enqueue_intake, field, is_ignored_author, target_of, text_field
from app.router import Context, Delivery, Enqueued, Router
from codexbot.commands import parse_command

router = Router()


@router.register("issue_comment", action="created")
def enqueue_steering_comment(delivery: Delivery, context: Context) -> Enqueued | None:
    comment = delivery.payload.get("comment")
    body = text_field(comment, "body")
    if not body.strip() or parse_command(body) is not None:
        return None
    if is_ignored_author(
        field(comment, "user"), body, context.settings, field(comment, "performed_via_github_app")
    ):
        return None
    target = target_of(delivery.payload)
    comment_id = field(comment, "id")
    if target is None or not isinstance(comment_id, int):
        return None
    if not context.task_running(target[0], target[1]):
        return None
    return enqueue_intake(
        context,
        delivery,
        kind="steer",
        is_pull=isinstance(field(delivery.payload, "issue", "pull_request"), dict),
        comment_id=comment_id,
        comment_type="issue",
        text=body,
    )
