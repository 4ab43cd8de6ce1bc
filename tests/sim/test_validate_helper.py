"""The OpenAPI helper itself must be able to fail, or conformance tests prove nothing."""

from __future__ import annotations

import pytest

from tests.openapi.validate import (
    SchemaMismatch,
    UndocumentedOperation,
    match_path,
    to_json_schema,
    validate_request,
    validate_response,
    validate_webhook,
)


@pytest.mark.parametrize(
    ("path", "template"),
    [
        (
            "/api/v3/repos/o/r/issues/comments/5",
            "/repos/{owner}/{repo}/issues/comments/{comment_id}",
        ),
        (
            "/api/v3/repos/o/r/issues/5/comments",
            "/repos/{owner}/{repo}/issues/{issue_number}/comments",
        ),
        ("/repos/o/r/git/ref/heads/codex/fix-1", "/repos/{owner}/{repo}/git/ref/{ref}"),
        ("/api/v3/repos/o/r/branches/codex/fix-1?x=1", "/repos/{owner}/{repo}/branches/{branch}"),
        ("/api/v3/app", "/app"),
    ],
)
def test_match_path(path: str, template: str) -> None:
    assert match_path(path) == template


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string", "nullable": True}, {"type": ["string", "null"]}),
        (
            {"type": "string", "enum": ["a"], "nullable": True},
            {"type": ["string", "null"], "enum": ["a", None]},
        ),
        (
            {"allOf": [{"$ref": "#/x"}], "nullable": True},
            {"anyOf": [{"allOf": [{"$ref": "#/x"}]}, {"type": "null"}]},
        ),
        ({"minimum": 1, "exclusiveMinimum": True}, {"exclusiveMinimum": 1}),
        (
            {"properties": {"nullable": {"type": "boolean"}}},
            {"properties": {"nullable": {"type": "boolean"}}},
        ),
    ],
)
def test_nullable_translation(schema: dict, expected: dict) -> None:
    assert to_json_schema(schema) == expected


def test_rejects_wrong_shapes() -> None:
    with pytest.raises(SchemaMismatch, match="full_name"):
        validate_response("GET", "/api/v3/repos/o/r", 200, {"id": 1})
    with pytest.raises(SchemaMismatch):
        validate_response("GET", "/api/v3/repos/o/r/issues/1/comments", 200, [{"id": "one"}])
    with pytest.raises(SchemaMismatch):
        validate_response("GET", "/api/v3/repos/o/r", 404, {"message": 404})
    with pytest.raises(SchemaMismatch):
        validate_request("POST", "/api/v3/repos/o/r/issues/1/reactions", {"content": "party"})
    with pytest.raises(SchemaMismatch):
        validate_webhook("issues", "labeled", {"action": "labeled"})


def test_accepts_documented_errors_and_rejects_unknown_operations() -> None:
    validate_response(
        "GET", "/api/v3/repos/o/r", 404, {"message": "Not Found", "documentation_url": "u"}
    )
    validate_response(
        "GET", "/api/v3/repos/o/r", 401, {"message": "Bad credentials", "documentation_url": "u"}
    )
    with pytest.raises(UndocumentedOperation):
        validate_response("DELETE", "/api/v3/app", 204, None)
    with pytest.raises(UndocumentedOperation):
        validate_webhook("deployment", "created", {})
