"""`/codex` commands in issue and pull request comments, including comments edited to add one."""

from __future__ import annotations

from app.requests import command_kind, enqueue_intake, field, is_ignored_author, text_field
from app.router import Context, Delivery, Enqueued, Router
from codexbot.commands import parse_command

router = Router()


def _comment_author_ignored(delivery: Delivery, context: Context) -> bool:
    comment = delivery.payload.get("comment")
    return is_ignored_author(
        field(comment, "user"),
        text_field(comment, "body"),
        context.settings,
        field(comment, "performed_via_github_app"),
    )


def _enqueue_command(delivery: Delivery, context: Context, body: str) -> Enqueued | None:
    command = parse_command(body)
    comment_id = field(delivery.payload, "comment", "id")
    if command is None or not isinstance(comment_id, int):
        return None
    return enqueue_intake(
        context,
        delivery,
        kind=command_kind(command),
        is_pull=isinstance(field(delivery.payload, "issue", "pull_request"), dict),
        comment_id=comment_id,
        comment_type="issue",
        text=command.argument if command.known else command.word,
    )


@router.register("issue_comment", action="created")
def enqueue_command_from_comment(delivery: Delivery, context: Context) -> Enqueued | None:
    if _comment_author_ignored(delivery, context):
        return None
    return _enqueue_command(delivery, context, text_field(delivery.payload, "comment", "body"))


@router.register("issue_comment", action="edited")
def enqueue_command_added_by_edit(delivery: Delivery, context: Context) -> Enqueued | None:
    """An edit counts once, when it adds a command; an edit that keeps the command does nothing."""
    if _comment_author_ignored(delivery, context):
        return None
    body = text_field(delivery.payload, "comment", "body")
    before = text_field(delivery.payload, "changes", "body", "from")
    if parse_command(before) is not None:
        return None
    return _enqueue_command(delivery, context, body)
