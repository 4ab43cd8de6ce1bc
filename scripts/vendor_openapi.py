"""Extract the slice of GitHub's OpenAPI descriptions that the simulator implements.

GitHub publishes its REST and webhook descriptions as two large JSON files (17 MB together).
The simulator's conformance tests only need the operations and webhook payloads it serves, so
this script copies those, plus every component they reach through ``$ref``, into
``tests/openapi/rest-subset.json`` and ``tests/openapi/webhooks-subset.json``. Prose
(descriptions, summaries, examples) is dropped to keep the files small; schemas are untouched.

It also writes ``tests/openapi/webhook-examples.json``: one payload for every webhook in the
description, with the event name GitHub sends in ``X-GitHub-Event``. The payload is GitHub's own
example where the description has one, else the smallest payload its schema allows (every
required property, the first choice of every enum, ``oneOf`` and ``anyOf``).

Usage: python scripts/vendor_openapi.py [--shared DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

# (path template, method, statuses the simulator returns)
REST_OPERATIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("/app", "get", ("200",)),
    ("/app/installations", "get", ("200",)),
    ("/app/hook/deliveries", "get", ("200", "400", "422")),
    ("/app/hook/deliveries/{delivery_id}/attempts", "post", ("202", "400", "422")),
    ("/app-manifests/{code}/conversions", "post", ("201", "404", "422")),
    ("/repos/{owner}/{repo}/installation", "get", ("200", "404")),
    ("/app/installations/{installation_id}/access_tokens", "post", ("201", "401", "404", "422")),
    ("/repos/{owner}/{repo}", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/issues/{issue_number}", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/issues/{issue_number}/comments", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/issues/{issue_number}/comments", "post", ("201", "404", "422")),
    ("/repos/{owner}/{repo}/issues/comments/{comment_id}", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/issues/comments/{comment_id}", "patch", ("200", "422")),
    ("/repos/{owner}/{repo}/issues/{issue_number}/labels", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/issues/{issue_number}/labels", "post", ("200", "404", "422")),
    ("/repos/{owner}/{repo}/issues/{issue_number}/reactions", "post", ("200", "201", "422")),
    ("/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions", "post", ("200", "201", "422")),
    ("/repos/{owner}/{repo}/issues/{issue_number}/reactions", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/pulls", "get", ("200", "422")),
    ("/repos/{owner}/{repo}/pulls", "post", ("201", "403", "422")),
    ("/repos/{owner}/{repo}/pulls/{pull_number}", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/pulls/{pull_number}", "patch", ("200", "403", "422")),
    ("/repos/{owner}/{repo}/pulls/{pull_number}/commits", "get", ("200",)),
    ("/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers", "post", ("201", "422")),
    ("/repos/{owner}/{repo}/pulls/{pull_number}/comments", "get", ("200",)),
    ("/repos/{owner}/{repo}/pulls/comments/{comment_id}", "get", ("200", "404")),
    (
        "/repos/{owner}/{repo}/pulls/{pull_number}/comments/{comment_id}/replies",
        "post",
        ("201", "404"),
    ),
    ("/repos/{owner}/{repo}/pulls/comments/{comment_id}/reactions", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/pulls/comments/{comment_id}/reactions", "post", ("200", "201", "422")),
    ("/repos/{owner}/{repo}/pulls/{pull_number}/reviews", "get", ("200",)),
    ("/repos/{owner}/{repo}/pulls/{pull_number}/reviews/{review_id}", "get", ("200", "404")),
    (
        "/repos/{owner}/{repo}/pulls/{pull_number}/reviews/{review_id}/comments",
        "get",
        ("200", "404"),
    ),
    ("/repos/{owner}/{repo}/pulls/{pull_number}/reviews", "post", ("200", "422")),
    ("/repos/{owner}/{repo}/contents/{path}", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/check-runs", "post", ("201", "422")),
    ("/repos/{owner}/{repo}/check-runs/{check_run_id}", "patch", ("200", "404", "422")),
    ("/repos/{owner}/{repo}/commits/{ref}/check-runs", "get", ("200",)),
    ("/repos/{owner}/{repo}/check-suites/{check_suite_id}/check-runs", "get", ("200",)),
    ("/repos/{owner}/{repo}/actions/runs/{run_id}/jobs", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/actions/jobs/{job_id}/logs", "get", ("302", "404")),
    ("/repos/{owner}/{repo}/branches/{branch}", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/git/ref/{ref}", "get", ("200", "404")),
    ("/repos/{owner}/{repo}/commits", "get", ("200", "404", "409")),
    ("/repos/{owner}/{repo}/collaborators/{username}/permission", "get", ("200", "404")),
)

# Webhook description keys ("event-action") the simulator can send.
WEBHOOKS: tuple[str, ...] = (
    "ping",
    "issues-opened",
    "issues-labeled",
    "issue-comment-created",
    "issue-comment-edited",
    "workflow-run-completed",
    "check-suite-completed",
    "pull-request-opened",
    "pull-request-ready-for-review",
    "pull-request-review-submitted",
    "pull-request-review-comment-created",
    "installation-created",
    "installation-repositories-added",
)

# Components every error answer may use even where an operation does not list it.
EXTRA_REFS: tuple[str, ...] = ("#/components/schemas/basic-error",)

PROSE_KEYS = frozenset({"description", "summary", "example", "examples", "externalDocs"})
NAME_MAPS = frozenset({"properties", "patternProperties", "schemas", "responses", "parameters"})


def strip_prose(node: Any, *, in_name_map: bool = False) -> Any:
    """Drop human-only keys; never drop keys of maps whose keys are names (e.g. ``properties``)."""
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            if not in_name_map and key in PROSE_KEYS:
                continue
            result[key] = strip_prose(value, in_name_map=not in_name_map and key in NAME_MAPS)
        return result
    if isinstance(node, list):
        return [strip_prose(item) for item in node]
    return node


def iter_refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_refs(item)


def resolve_pointer(document: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ValueError(f"only local refs are supported: {ref}")
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def copy_reachable_components(
    source: dict[str, Any], roots: Iterable[Any], extra_refs: Iterable[str] = ()
) -> dict[str, dict[str, Any]]:
    """Copy every ``#/components/...`` entry reachable from ``roots`` (transitively)."""
    components: dict[str, dict[str, Any]] = {}
    pending = [*extra_refs, *(ref for root in roots for ref in iter_refs(root))]
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        parts = ref[2:].split("/")
        if parts[0] != "components" or len(parts) != 3:
            raise ValueError(f"unexpected ref shape: {ref}")
        target = strip_prose(resolve_pointer(source, ref), in_name_map=False)
        components.setdefault(parts[1], {})[parts[2]] = target
        pending.extend(iter_refs(target))
    return {kind: dict(sorted(entries.items())) for kind, entries in sorted(components.items())}


def select_operation(operation: dict[str, Any], statuses: tuple[str, ...]) -> dict[str, Any]:
    selected: dict[str, Any] = {
        "operationId": operation["operationId"],
        "responses": {
            s: operation["responses"][s] for s in statuses if s in operation["responses"]
        },
    }
    if "requestBody" in operation:
        selected["requestBody"] = operation["requestBody"]
    return strip_prose(selected)


def rest_subset(source: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, method, statuses in REST_OPERATIONS:
        operation = source["paths"][path][method]
        paths.setdefault(path, {})[method] = select_operation(operation, statuses)
    return {
        "openapi": source["openapi"],
        "info": {
            "title": "GitHub REST subset for codex-bot's simulator",
            "version": source["info"]["version"],
        },
        "paths": paths,
        "components": copy_reachable_components(source, paths.values(), EXTRA_REFS),
    }


def webhooks_subset(source: dict[str, Any]) -> dict[str, Any]:
    webhooks = {
        name: {"post": {"requestBody": source["webhooks"][name]["post"]["requestBody"]}}
        for name in WEBHOOKS
    }
    webhooks = strip_prose(webhooks)
    return {
        "openapi": source["openapi"],
        "info": {
            "title": "GitHub webhooks subset for codex-bot's simulator",
            "version": source["info"]["version"],
        },
        "webhooks": webhooks,
        "components": copy_reachable_components(source, webhooks.values()),
    }


def event_name(operation: dict[str, Any]) -> str:
    """``X-GitHub-Event`` for a webhook: its subcategory, whose doc slugs use hyphens."""
    return str(operation["x-github"]["subcategory"]).replace("-", "_")


def smallest_instance(source: dict[str, Any], schema: Any, depth: int = 0) -> Any:
    """The smallest value a schema allows: required properties only, first of every choice."""
    if depth > 40:
        raise ValueError("schema nests too deep for an example")
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        return smallest_instance(source, resolve_pointer(source, schema["$ref"]), depth + 1)
    if "enum" in schema:
        return schema["enum"][0]
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = smallest_instance(source, part, depth + 1)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    for choice in ("oneOf", "anyOf"):
        if choice in schema:
            return smallest_instance(source, schema[choice][0], depth + 1)
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {
            name: smallest_instance(source, properties.get(name, {}), depth + 1)
            for name in schema.get("required", [])
        }
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return False
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            return "2024-01-01T00:00:00Z"
        if fmt == "uri":
            return "https://github.com/octo-org"
        return "x"
    return None


def webhook_examples(source: dict[str, Any]) -> dict[str, Any]:
    """Every webhook GitHub describes: ``{key: {"event": name, "payload": {...}}}``."""
    examples: dict[str, Any] = {}
    for key, webhook in sorted(source["webhooks"].items()):
        operation = webhook["post"]
        content = operation["requestBody"]["content"]["application/json"]
        example = content.get("examples", {}).get("default")
        if example is not None:
            payload = resolve_pointer(source, example["$ref"])["value"]
        else:
            payload = smallest_instance(source, content["schema"])
        examples[key] = {"event": event_name(operation), "payload": payload}
    return examples


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared" / "github")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "tests" / "openapi")
    args = parser.parse_args(argv)
    rest = json.loads((args.shared / "rest-openapi.api.github.com.json").read_text("utf-8"))
    hooks = json.loads((args.shared / "webhooks-openapi.api.github.com.json").read_text("utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, document in (
        ("rest-subset.json", rest_subset(rest)),
        ("webhooks-subset.json", webhooks_subset(hooks)),
        ("webhook-examples.json", webhook_examples(hooks)),
    ):
        target = args.out / name
        if name == "webhook-examples.json":  # one webhook a line: about 1 MB indented
            lines = (f" {json.dumps(k)}: {json.dumps(v)}" for k, v in document.items())
            target.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
            print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")
            continue
        write_json(target, document)
        print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
