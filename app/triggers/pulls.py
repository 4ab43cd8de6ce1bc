"""Pull requests opened or made ready for review by a person: reviewed by the bot when the
repository's policy says `review: auto` (the intake lane reads it from the default branch)."""

from __future__ import annotations

from app.requests import enqueue_intake, field, is_ignored_author
from app.router import Context, Delivery, Enqueued, Router

router = Router()


@router.register("pull_request", action="opened")
@router.register("pull_request", action="ready_for_review")
def enqueue_review_of_pull_ready_for_it(delivery: Delivery, context: Context) -> Enqueued | None:
    pull = delivery.payload.get("pull_request")
    if field(pull, "draft") is not False or field(pull, "state") != "open":
        return None
    # Not the bot's own pull requests, nor those of bots it does not trust: a review of those
    # is asked for with `/codex review`.
    if is_ignored_author(field(pull, "user"), "", context.settings):
        return None
    return enqueue_intake(context, delivery, kind="auto_review", is_pull=True)
