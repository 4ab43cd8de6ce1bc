"""What the soak sends: repositories and issues on the simulator, and a stream of signed deliveries
made by the simulator's own user actions (labels, comments, issues opened), each with the outcome
it must have.

Distinct valid deliveries are most of the stream: mostly events the bot ignores (plain comments,
other labels, issues opened without the trigger label, pushes), a few that start a task (the
``codex`` label, ``/codex fix`` from a maintainer; each on an issue of its own) and a few answered
with a comment instead (``/codex fix`` from a reader, ``/codex help``). Mixed in: duplicates
(the same delivery id and body again, as a redelivery is), deliveries signed with another secret,
and correctly signed bodies that are not JSON.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from bench.ingest.deliveries import sign
from sim.stack import DEMO_REPO, Stack, read_issue_file

Expect = Literal["task", "reply", "none"]
Kind = Literal["valid", "duplicate", "bad_signature", "malformed"]

REPOS = ("octo-org/soak-a", "octo-org/soak-b")
MAINTAINER = "octo-maintainer"
READER = "octo-reader"
NOISE_ISSUES_PER_REPO = 10
DUPLICATES = 0.20
BAD_SIGNATURES = 0.05
MALFORMED = 0.01
# Of every 100 deliveries the bot ignores (bench.ingest's mix without the triggers).
NOISE: tuple[tuple[int, str], ...] = (
    (44, "comment"),
    (25, "label"),
    (19, "opened"),
    (12, "push"),
)


@dataclass(frozen=True)
class Planned:
    """A distinct valid delivery and what it must lead to."""

    delivery_id: str
    event: str
    body: bytes
    expect: Expect
    repo: str
    number: int  # the issue it is about (0: none, a push)


@dataclass(frozen=True)
class Post:
    """One POST to /webhook."""

    delivery_id: str
    event: str
    body: bytes
    signature: str
    kind: Kind


@dataclass(frozen=True)
class Counts:
    valid: int
    duplicates: int
    bad_signatures: int
    malformed: int


def counts(deliveries: int) -> Counts:
    duplicates = round(deliveries * DUPLICATES)
    bad = round(deliveries * BAD_SIGNATURES)
    malformed = round(deliveries * MALFORMED)
    return Counts(deliveries - duplicates - bad - malformed, duplicates, bad, malformed)


def seed_world(stack: Stack) -> dict[str, list[int]]:
    """The soak's repositories, each with a reader and noise issues: repo -> noise issue numbers."""
    noise: dict[str, list[int]] = {}
    for repo in REPOS:
        stack.seed(full_name=repo)  # the demo repository and its issue
        stack.github.set_permission(repo, READER, "read")
        noise[repo] = [
            stack.github.create_issue(repo, f"Noise {n}", "Nothing for the bot here.")["number"]
            for n in range(NOISE_ISSUES_PER_REPO)
        ]
    return noise


def plan(stack: Stack, valid: int, tasks: int, replies: int, rng: random.Random) -> list[Planned]:
    """``valid`` distinct deliveries: ``tasks`` that start a task, ``replies`` answered with a
    comment, the rest ignored; in the order they are sent."""
    if tasks + replies > valid:
        raise ValueError("more tasks and replies than valid deliveries")
    noise_issues = seed_world(stack)
    title, body = read_issue_file(DEMO_REPO / "issue.md")
    sim = stack.github
    triggers: list[Planned] = []
    with sim.held() as held:

        def made(expect: Expect, repo: str, number: int) -> Planned:
            event, payload = held[-1]
            data = json.dumps(payload).encode()
            return Planned(str(uuid.uuid4()), event, data, expect, repo, number)

        for n in range(tasks):
            repo = REPOS[n % len(REPOS)]
            number = sim.create_issue(repo, title, body)["number"]
            if n % 2:
                sim.comment(repo, number, "/codex fix", MAINTAINER)
            else:
                sim.add_label(repo, number, "codex")
            triggers.append(made("task", repo, number))
        for n in range(replies):
            repo = REPOS[n % len(REPOS)]
            number = sim.create_issue(repo, f"Asked by a reader {n}", "Please fix.")["number"]
            if n % 2:
                sim.comment(repo, number, "/codex help", MAINTAINER)
            else:
                sim.comment(repo, number, "/codex fix", READER)
            triggers.append(made("reply", repo, number))
        weights = [weight for weight, _ in NOISE]
        ignored: list[Planned] = []
        for n in range(valid - len(triggers)):
            repo = rng.choice(REPOS)
            number = rng.choice(noise_issues[repo])
            what = rng.choices([name for _, name in NOISE], weights)[0]
            if what == "comment":
                sim.comment(
                    repo, number, "Thanks, looks good to me.", rng.choice([MAINTAINER, READER])
                )
            elif what == "label":
                sim.add_label(repo, number, rng.choice(["bug", "triage", "help wanted"]))
            elif what == "opened":
                number = sim.open_issue(repo, f"Opened {n}", "A new report.")[0]["number"]
            else:
                held.append(("push", push_payload(stack, repo)))
                number = 0
            ignored.append(made("none", repo, number))
    # Triggers spread evenly through the ignored deliveries.
    ordered = list(ignored)
    for index, planned in enumerate(triggers):
        ordered.insert(round((index + 0.5) * len(ordered) / max(len(triggers), 1)), planned)
    return ordered


def push_payload(stack: Stack, full_name: str) -> dict[str, Any]:
    """A push to the default branch, as GitHub sends it (the bot ignores pushes)."""
    sim = stack.github
    with sim.state.lock:
        repo = sim.require_repo(full_name)
        return {
            "ref": f"refs/heads/{repo.default_branch}",
            "before": "0" * 40,
            "after": uuid.uuid4().hex + "0" * 8,
            "created": False,
            "deleted": False,
            "forced": False,
            "commits": [],
            "repository": sim.render_repo(repo),
            "pusher": {"name": MAINTAINER, "email": None},
            "sender": sim.render_user(MAINTAINER),
            "installation": {"id": repo.installation_id},
        }


def stream(planned: list[Planned], want: Counts, secret: str, rng: random.Random) -> list[Post]:
    """Every POST in the order sent: each distinct delivery once, duplicates a little after
    their original (every trigger repeated at least once), bad signatures and malformed bodies
    anywhere."""
    placed: list[tuple[float, Post]] = []
    for index, one in enumerate(planned):
        post = Post(one.delivery_id, one.event, one.body, sign(one.body, secret), "valid")
        placed.append((float(index), post))
    triggers = [index for index, one in enumerate(planned) if one.expect != "none"]
    sources = triggers[: want.duplicates]
    sources += [rng.randrange(len(planned)) for _ in range(want.duplicates - len(sources))]
    for index in sources:
        original = placed[index][1]
        # Mostly within a few requests (GitHub's retries and racing copies), some much later.
        later = rng.uniform(0.01, 3) if rng.random() < 0.7 else rng.uniform(3, 300)
        placed.append((index + later, Post(**{**original.__dict__, "kind": "duplicate"})))
    for _ in range(want.bad_signatures):
        one = rng.choice(planned)
        post = Post(
            str(uuid.uuid4()), one.event, one.body, sign(one.body, "not-" + secret), "bad_signature"
        )
        placed.append((rng.uniform(0, len(planned)), post))
    for _ in range(want.malformed):
        one = rng.choice(planned)
        body = one.body[: len(one.body) // 2]  # cut short: not JSON, yet correctly signed
        post = Post(str(uuid.uuid4()), one.event, body, sign(body, secret), "malformed")
        placed.append((rng.uniform(0, len(planned)), post))
    placed.sort(key=lambda pair: pair[0])
    return [post for _, post in placed]
