"""The trigger label: a maintainer labels an issue (or opens one already labelled)."""

from __future__ import annotations

from typing import Any

from app.router import Context, Delivery, Enqueued, Router

router = Router()


def _label_names(issue: dict[str, Any]) -> set[str]:
    labels = issue.get("labels")
    if not isinstance(labels, list):
        return set()
    return {
        label["name"]
        for label in labels
        if isinstance(label, dict) and isinstance(label.get("name"), str)
    }


def _fix_request(delivery: Delivery, context: Context) -> Enqueued | None:
    payload = delivery.payload
    issue, repository = payload.get("issue"), payload.get("repository")
    installation = payload.get("installation")
    if not (
        isinstance(issue, dict) and isinstance(repository, dict) and isinstance(installation, dict)
    ):
        return None
    if "pull_request" in issue or issue.get("state") == "closed":
        return None
    number, repo, installation_id = (
        issue.get("number"),
        repository.get("full_name"),
        installation.get("id"),
    )
    if not (isinstance(number, int) and isinstance(repo, str) and isinstance(installation_id, int)):
        return None
    return context.enqueue(
        "workers.jobs.fix_issue",
        delivery,
        repo=repo,
        issue_number=number,
        installation_id=installation_id,
    )


@router.register("issues", action="labeled")
def enqueue_fix_for_labeled_issue(delivery: Delivery, context: Context) -> Enqueued | None:
    label = delivery.payload.get("label")
    if not isinstance(label, dict) or label.get("name") != context.settings.codex_trigger_label:
        return None
    return _fix_request(delivery, context)


@router.register("issues", action="opened")
def enqueue_fix_for_issue_opened_with_label(
    delivery: Delivery, context: Context
) -> Enqueued | None:
    issue = delivery.payload.get("issue")
    if not isinstance(issue, dict) or context.settings.codex_trigger_label not in _label_names(
        issue
    ):
        return None
    return _fix_request(delivery, context)
