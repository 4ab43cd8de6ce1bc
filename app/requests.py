"""What a trigger hands to the intake lane: reading the parts of a payload every trigger needs.

Payloads are hostile: every field is checked for type before use, and anything unexpected
means "nothing to do", never an error.
"""

from __future__ import annotations

from typing import Any

from app.router import Context, Delivery, Enqueued
from codexbot.commands import MARKER, Command
from codexbot.request import RequestKind, TaskRequest
from codexbot.settings import Settings

INTAKE = "workers.intake.accept"


def field(mapping: Any, *path: str) -> Any:
    """``mapping[path[0]][path[1]]...``, or None when any step is missing or not a mapping."""
    for key in path:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def text_field(mapping: Any, *path: str) -> str:
    value = field(mapping, *path)
    return value if isinstance(value, str) else ""


def is_ignored_author(user: Any, body: str, settings: Settings, via_app: Any = None) -> bool:
    """Our own comments, comments carrying our marker, and bots we do not trust."""
    if MARKER in body:
        return True
    if isinstance(via_app, dict) and via_app.get("id") == settings.github_app_id:
        return True
    login = text_field(user, "login")
    if not login:
        return True
    is_bot = field(user, "type") == "Bot" or login.lower().endswith("[bot]")
    return is_bot and login.lower() not in settings.trusted_bots()


def command_kind(command: Command) -> RequestKind:
    """The request a command makes: `/codex review` asks the bot to review (a "code_review";
    "review" is the follow-up a review of the bot's own PR starts)."""
    if not command.known:
        return "unknown"
    return "code_review" if command.name == "review" else command.name


def target_of(payload: dict[str, Any], number: Any = None) -> tuple[str, int, int] | None:
    """(repository full name, issue or PR number, installation id), if the payload has them."""
    repo = field(payload, "repository", "full_name")
    installation = field(payload, "installation", "id")
    if number is None:
        number = field(payload, "issue", "number")
    if number is None:
        number = field(payload, "pull_request", "number")
    valid = isinstance(repo, str) and "/" in repo
    if not (valid and isinstance(number, int) and isinstance(installation, int)):
        return None
    return repo, number, installation


def enqueue_intake(
    context: Context,
    delivery: Delivery,
    *,
    kind: RequestKind,
    is_pull: bool,
    comment_id: int | None = None,
    comment_type: str | None = None,
    review_id: int | None = None,
    text: str = "",
    number: int | None = None,
) -> Enqueued | None:
    """``number``: the PR, for an event about something else (a CI run) that names it."""
    target = target_of(delivery.payload, number)
    sender = text_field(delivery.payload, "sender", "login")
    sender_id = field(delivery.payload, "sender", "id")
    if target is None or not sender:
        return None
    repo, number, installation_id = target
    request = TaskRequest(
        kind=kind,
        repo=repo,
        number=number,
        installation_id=installation_id,
        sender=sender,
        is_pull=is_pull,
        task_id=delivery.id,
        delivery_id=delivery.id,
        sender_id=sender_id if isinstance(sender_id, int) else None,
        comment_id=comment_id,
        comment_type=comment_type,
        review_id=review_id,
        text=text[:20_000],
    )
    return context.enqueue(INTAKE, delivery, **request.fields())
