"""Validate HTTP bodies and webhook payloads against GitHub's own (vendored) OpenAPI schemas.

The vendored files are produced by ``scripts/vendor_openapi.py``. They are OpenAPI 3.0, whose
schema dialect differs from JSON Schema in a few ways (``nullable``, boolean
``exclusiveMinimum``); ``to_json_schema`` translates those before ``jsonschema`` sees them.

Use from any test, for example on everything the simulator recorded::

    for r in sim.requests:
        validate_response(r.method, r.path, r.status, r.response_json)
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import referencing
from referencing.jsonschema import DRAFT202012

HERE = Path(__file__).resolve().parent
REST_URI = "urn:codexbot:rest-subset"
WEBHOOKS_URI = "urn:codexbot:webhooks-subset"
API_PREFIX = "/api/v3"
# Error statuses GitHub answers on any endpoint, with its usual error body.
BASIC_ERROR = "#/components/schemas/basic-error"
# Keywords whose value maps names to schemas: those names are data, not keywords.
NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "schemas"})


class SchemaMismatch(AssertionError):
    """A body does not match GitHub's description (a simulator or client bug)."""


class UndocumentedOperation(AssertionError):
    """The method/path/status is not in the vendored subset."""


def to_json_schema(node: Any) -> Any:
    """Translate an OpenAPI 3.0 schema tree into JSON Schema 2020-12."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {
        key: (
            {name: to_json_schema(sub) for name, sub in value.items()}
            if key in NAME_MAPS and isinstance(value, dict)
            else to_json_schema(value)
        )
        for key, value in node.items()
    }
    for bound in ("Minimum", "Maximum"):
        flag = schema.get(f"exclusive{bound}")
        if isinstance(flag, bool):
            del schema[f"exclusive{bound}"]
            if flag and bound.lower() in schema:
                schema[f"exclusive{bound}"] = schema.pop(bound.lower())
    if schema.pop("nullable", False) is True:
        schema = _allow_null(schema)
    return schema


def _allow_null(schema: dict[str, Any]) -> dict[str, Any]:
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = [*types, "null"] if "null" not in types else types
        if "enum" in schema and None not in schema["enum"]:
            schema["enum"] = [*schema["enum"], None]
        return schema
    # allOf/oneOf/anyOf/$ref without a type: null is an alternative to the whole schema.
    return {"anyOf": [schema, {"type": "null"}]}


@functools.cache
def _document(name: str) -> dict[str, Any]:
    return json.loads((HERE / name).read_text("utf-8"))


@functools.cache
def _registry() -> referencing.Registry:
    resources = [
        (REST_URI, to_json_schema(_document("rest-subset.json"))),
        (WEBHOOKS_URI, to_json_schema(_document("webhooks-subset.json"))),
    ]
    return referencing.Registry().with_resources(
        (uri, DRAFT202012.create_resource(contents)) for uri, contents in resources
    )


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def _check(base_uri: str, pointer: str, instance: Any, what: str) -> None:
    validator = jsonschema.Draft202012Validator({"$ref": base_uri + pointer}, registry=_registry())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        details = "\n".join(
            f"  at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
            for e in errors[:20]
        )
        raise SchemaMismatch(f"{what}: {len(errors)} schema error(s)\n{details}")


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = ""
    for piece in re.split(r"(\{[^}]+\})", template):
        if piece.startswith("{"):
            # A git ref ("heads/main"), a branch name and a file's path may contain slashes.
            pattern += "(.+)" if piece in ("{ref}", "{branch}", "{path}") else "([^/]+)"
        else:
            pattern += re.escape(piece)
    return re.compile(pattern + "$")


def match_path(path: str) -> str:
    """Map a concrete request path (with or without ``/api/v3``) to its OpenAPI template."""
    path = path.split("?", 1)[0]
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX) :]
    candidates = [
        t for t in _document("rest-subset.json")["paths"] if _template_regex(t).match(path)
    ]
    if not candidates:
        raise UndocumentedOperation(f"no vendored operation for path {path}")
    # Prefer the template with the most literal text (e.g. issues/comments/{id} over issues/{n}).
    return max(candidates, key=lambda t: len(re.sub(r"\{[^}]+\}", "", t)))


def _operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    template = match_path(path)
    operation = _document("rest-subset.json")["paths"][template].get(method.lower())
    if operation is None:
        raise UndocumentedOperation(f"{method.upper()} {template} is not in the vendored subset")
    return template, operation


def validate_response(method: str, path: str, status: int, body: Any) -> None:
    """Raise ``SchemaMismatch`` if ``body`` is not what GitHub documents for this answer."""
    template, operation = _operation(method, path)
    what = f"response {status} to {method.upper()} {path}"
    responses = operation["responses"]
    if str(status) in responses:
        response = responses[str(status)]
        if "$ref" in response:
            response = _document("rest-subset.json")["components"]["responses"][
                response["$ref"].rsplit("/", 1)[1]
            ]
            pointer = _pointer(
                "components", "responses", responses[str(status)]["$ref"].rsplit("/", 1)[1]
            )
        else:
            pointer = _pointer("paths", template, method.lower(), "responses", str(status))
        content = response.get("content", {})
        if "application/json" not in content:
            return
        _check(REST_URI, pointer + "/content/application~1json/schema", body, what)
    elif status >= 400:
        _check(REST_URI, BASIC_ERROR, body, what)
    else:
        raise UndocumentedOperation(f"{what}: status {status} is not documented")


def validate_request(method: str, path: str, body: Any) -> None:
    """Raise ``SchemaMismatch`` if a client sent a body GitHub would not accept."""
    template, operation = _operation(method, path)
    if "requestBody" not in operation:
        raise UndocumentedOperation(f"{method.upper()} {template} takes no request body")
    pointer = _pointer(
        "paths", template, method.lower(), "requestBody", "content", "application/json", "schema"
    )
    _check(REST_URI, pointer, body, f"request body of {method.upper()} {path}")


def validate_recorded(recorded: Any) -> None:
    """Validate one ``sim.requests`` entry: its response, and (if accepted) its request body.

    Git traffic and admin (``/_sim``) calls are skipped. A request GitHub refused (4xx) is not
    validated, since tests send invalid bodies on purpose.
    """
    if not recorded.path.startswith(API_PREFIX + "/"):
        return
    validate_response(recorded.method, recorded.path, recorded.status, recorded.response_json)
    if recorded.request_json is not None and recorded.status < 400:
        validate_request(recorded.method, recorded.path, recorded.request_json)


def webhook_key(event: str, action: str | None) -> str:
    """``("issue_comment", "created")`` -> ``"issue-comment-created"`` (the description's key;
    ``ready_for_review`` -> ``ready-for-review`` too)."""
    key = f"{event}-{action}" if action else event
    return key.replace("_", "-")


def validate_webhook(event: str, action: str | None, payload: Any) -> None:
    """Raise ``SchemaMismatch`` if a webhook payload is not what GitHub documents."""
    key = webhook_key(event, action)
    if key not in _document("webhooks-subset.json")["webhooks"]:
        raise UndocumentedOperation(f"webhook {key} is not in the vendored subset")
    pointer = _pointer(
        "webhooks", key, "post", "requestBody", "content", "application/json", "schema"
    )
    _check(WEBHOOKS_URI, pointer, payload, f"webhook {key}")
