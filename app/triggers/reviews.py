"""Review follow-ups: a review asking for changes (or carrying `/codex`) on a PR the bot opened
sends it back to work on the same branch; `/codex` in a review on any PR is a command."""

from __future__ import annotations

from app.requests import command_kind, enqueue_intake, field, is_ignored_author, text_field
from app.router import Context, Delivery, Enqueued, Router
from codexbot.commands import Command, parse_command
from codexbot.request import RequestKind

router = Router()
BOT_BRANCH_PREFIX = "codex/"


def opened_by_bot(delivery: Delivery) -> bool:
    """Our PRs come from a `codex/` branch of the same repository, opened by a bot account.
    The intake lane checks the author against the App's own login before any work starts."""
    pull = delivery.payload.get("pull_request")
    head_repo = field(pull, "head", "repo", "full_name")
    return (
        field(pull, "user", "type") == "Bot"
        and text_field(pull, "head", "ref").startswith(BOT_BRANCH_PREFIX)
        and head_repo == field(delivery.payload, "repository", "full_name")
    )


def _kind_on_pull(command: Command | None, by_bot: bool) -> RequestKind | None:
    """On the bot's own PR, `/codex` with anything but ask, stop or help is a follow-up: the
    review itself is the instruction. Elsewhere a command means what it says."""
    if command is None:
        return None
    if by_bot and command.name in ("fix", "unknown"):
        return "review"
    return command_kind(command)


def _argument(command: Command, body: str, kind: str) -> str:
    if kind == "review":
        return body if command.name == "unknown" else command.argument
    return command.argument if command.known else command.word


@router.register("pull_request_review", action="submitted")
def enqueue_follow_up_for_review(delivery: Delivery, context: Context) -> Enqueued | None:
    review = delivery.payload.get("review")
    body = text_field(review, "body")
    review_id = field(review, "id")
    if not isinstance(review_id, int) or is_ignored_author(
        field(review, "user"), body, context.settings
    ):
        return None
    command = parse_command(body)
    by_bot = opened_by_bot(delivery)
    kind = _kind_on_pull(command, by_bot)
    if kind is None and by_bot and field(review, "state") == "changes_requested":
        kind = "review"
    if kind is None:
        return None
    return enqueue_intake(
        context,
        delivery,
        kind=kind,
        is_pull=True,
        review_id=review_id,
        comment_type="review",
        text=_argument(command, body, kind) if command else "",
    )


@router.register("pull_request_review_comment", action="created")
def enqueue_follow_up_for_review_comment(delivery: Delivery, context: Context) -> Enqueued | None:
    comment = delivery.payload.get("comment")
    body = text_field(comment, "body")
    comment_id = field(comment, "id")
    if not isinstance(comment_id, int) or is_ignored_author(
        field(comment, "user"), body, context.settings, field(comment, "performed_via_github_app")
    ):
        return None
    command = parse_command(body)
    kind = _kind_on_pull(command, opened_by_bot(delivery))
    if kind is None or command is None:
        return None
    review_id = field(comment, "pull_request_review_id")
    return enqueue_intake(
        context,
        delivery,
        kind=kind,
        is_pull=True,
        comment_id=comment_id,
        comment_type="review_comment",
        review_id=review_id if isinstance(review_id, int) else None,
        text=_argument(command, body, kind),
    )
