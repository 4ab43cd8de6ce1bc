"""The payload mix both receivers get: signed, real-shape deliveries, mostly ones the bot ignores.

Bodies come from ``tests/fixtures/issues__labeled.json`` (a payload captured from the GitHub
simulator) and the simulator's own builders for comments, so they are the shape and size GitHub
sends (about 11-13 KB). Delivery ids are not fixed here: the load script gives every request a
fresh id and makes every fifth request a redelivery of the one before (20 % duplicates).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sim.github.payloads import Urls, comment_json, webhook_issue_comment
from sim.github.state import Comment, Repo, User

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "issues__labeled.json"

# (how many of every 100 distinct deliveries, event, what the receiver does with it)
MIX: tuple[tuple[int, str, str], ...] = (
    (35, "issue_comment.created", "ignored: a plain comment (one EXISTS: is a task running?)"),
    (20, "issues.labeled", "ignored: another label"),
    (15, "issues.opened", "ignored: an issue opened without the trigger label"),
    (10, "push", "ignored: an event no trigger wants"),
    (12, "issues.labeled", "enqueued: the trigger label"),
    (8, "issue_comment.created", "enqueued: a /codex fix command"),
)
DUPLICATE_EVERY = 5  # every fifth request repeats the one before it: 20 % duplicates


@dataclass(frozen=True)
class Delivery:
    event: str
    body: bytes
    signature: str
    enqueues: bool


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _labeled(label: str, number: int) -> dict[str, Any]:
    payload = json.loads(FIXTURE.read_text())
    payload["label"]["name"] = label
    payload["issue"]["labels"] = [dict(payload["label"])]
    payload["issue"]["number"] = number
    return payload


def _comment(body: str, number: int, comment_id: int) -> dict[str, Any]:
    base = _labeled("triage", number)
    html = base["repository"]["html_url"].rsplit("/", 2)[0]
    owner, name = base["repository"]["full_name"].split("/")
    moment = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    repo = Repo(
        id=base["repository"]["id"],
        owner=owner,
        name=name,
        installation_id=base["installation"]["id"],
        default_branch="main",
        private=False,
        bare_path=Path("/nonexistent"),
        created_at=moment,
        permissions={base["sender"]["login"]: "write"},
    )
    user = User(id=base["sender"]["id"], login=base["sender"]["login"])
    comment = Comment(comment_id, repo.full_name, number, user.login, body, moment, moment)
    return webhook_issue_comment(
        "created",
        issue=base["issue"],
        comment=comment_json(
            Urls(html), repo, comment, user=user, reactions=[], app=None, is_pull=False
        ),
        repository=base["repository"],
        sender=base["sender"],
        installation_id=repo.installation_id,
    )


def build_mix(secret: str, trigger_label: str = "codex") -> list[Delivery]:
    """100 distinct deliveries in the proportions of ``MIX``, interleaved."""
    made: list[list[Delivery]] = []
    for index, (count, kind, outcome) in enumerate(MIX):
        enqueues = outcome.startswith("enqueued")
        group = []
        for n in range(count):
            number = 100 * index + n + 1
            if kind == "issue_comment.created":
                text = "/codex fix the failing test" if enqueues else "Thanks, looks good to me."
                payload = _comment(text, number, 10_000 + number)
                event = "issue_comment"
            elif kind == "push":
                payload = copy.deepcopy(_labeled("triage", number))
                payload.pop("label")
                payload["action"] = None
                event = "push"
            else:
                event, action = kind.split(".")
                payload = _labeled(trigger_label if enqueues else "bug", number)
                payload["action"] = action
                if action == "opened":
                    del payload["label"]
            body = json.dumps(payload).encode()
            group.append(Delivery(event, body, sign(body, secret), enqueues))
        made.append(group)
    mixed: list[Delivery] = []
    while any(made):  # interleave, so every stretch of the run sees the same mix
        for group in made:
            if group:
                mixed.append(group.pop())
    return mixed


def write_for_wrk(deliveries: list[Delivery], path: Path) -> None:
    """Records for ``rotate.lua``: ``event\\nsignature\\nlength\\n`` then the body."""
    with path.open("wb") as out:
        for delivery in deliveries:
            out.write(f"{delivery.event}\n{delivery.signature}\n{len(delivery.body)}\n".encode())
            out.write(delivery.body)
