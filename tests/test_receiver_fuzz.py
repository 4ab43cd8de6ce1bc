"""schemathesis against the live receiver (``codexbot serve``, over real HTTP): for every request it
generates from app/openapi.yaml, signed or not, the answer is never a 5xx and always a status the
description documents.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.test_receiver import Served

OPENAPI = Path(__file__).resolve().parents[1] / "app" / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(OPENAPI)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
WEBHOOK_EXAMPLES = 1800
OTHER_EXAMPLES = 300
MINIMUM_REQUESTS = 2000
SENT: list[int] = []  # status codes of every request sent, for the count check at the end
FUZZ_SETTINGS = dict(
    deadline=None,
    derandomize=True,  # the same requests every run: a failure here can be repeated
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.fixture(scope="module")
def live(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = Served(tmp_path_factory.mktemp("fuzz"), "--workers", "2")
    yield served
    served.close()


def documented_statuses() -> dict[tuple[str, str], set[int]]:
    paths = yaml.safe_load(OPENAPI.read_text())["paths"]
    return {
        (method.upper(), path): {int(status) for status in operation["responses"]}
        for path, operations in paths.items()
        for method, operation in operations.items()
    }


DOCUMENTED = documented_statuses()


def expected_statuses(method: str, path: str) -> set[int]:
    """What the description documents; for the methods schemathesis also probes, what HTTP says:
    HEAD answers as GET does, OPTIONS lists the methods (200), any other method is 405."""
    if (method, path) in DOCUMENTED:
        return DOCUMENTED[(method, path)]
    if method == "HEAD" and ("GET", path) in DOCUMENTED:
        return DOCUMENTED[("GET", path)]
    return {200} if method == "OPTIONS" else {405}


def send(
    case: schemathesis.Case,
    live: Served,
    session: requests.Session,
    sign: bool = False,
    event: str | None = None,
) -> None:
    """Send ``case`` as generated; when ``sign``, with a valid signature over the exact body, and
    with ``event``, as that event with a well-formed delivery id, so it reaches the handlers."""
    prepared = requests.Request(**case.as_transport_kwargs(base_url=live.url)).prepare()
    if event:
        prepared.headers["X-GitHub-Event"] = event
        prepared.headers["X-GitHub-Delivery"] = f"fuzz-{len(SENT)}"
    if sign:
        body = prepared.body or b""
        body = body.encode() if isinstance(body, str) else body
        digest = hmac.new(live.secret.encode(), body, hashlib.sha256).hexdigest()
        prepared.headers["X-Hub-Signature-256"] = "sha256=" + digest
    response = session.send(prepared, timeout=30)
    SENT.append(response.status_code)
    what = (response.status_code, response.text[:200], case.as_curl_command())
    assert response.status_code < 500, what
    assert response.status_code in expected_statuses(case.method.upper(), case.path), what
    case.validate_response(response, checks=CHECKS)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        yield client


WEBHOOK = SCHEMA.include(path="/webhook")


@WEBHOOK.parametrize()
@WEBHOOK.given(
    sign=st.booleans(),
    event=st.sampled_from(
        [None, "issues", "issue_comment", "pull_request_review", "pull_request_review_comment"]
    ),
)
@settings(max_examples=WEBHOOK_EXAMPLES, **FUZZ_SETTINGS)
def test_webhook_answers_every_request_with_a_documented_4xx_or_success(
    case, sign, event, live, session
):
    send(case, live, session, sign, event)


@SCHEMA.exclude(path="/webhook").parametrize()
@settings(max_examples=OTHER_EXAMPLES, **FUZZ_SETTINGS)
def test_other_endpoints_answer_as_documented(case, live, session):
    send(case, live, session)


def test_the_fuzzing_sent_enough_requests_and_reached_past_the_signature():
    assert len(SENT) >= MINIMUM_REQUESTS, len(SENT)
    # Signed requests get past the signature check: malformed ones are 400/415, good ones 2xx.
    assert {400, 401}.issubset(SENT), sorted(set(SENT))
    assert any(status in (202, 204) for status in SENT), sorted(set(SENT))
