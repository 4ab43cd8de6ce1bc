"""Every delivery GitHub can send is answered 2xx when it is signed and well-formed.

One payload per webhook in GitHub's webhooks description (``tests/openapi/webhook-examples.json``,
from ``make vendor-openapi``): GitHub's own example where it gives one, else the smallest payload
the schema allows. A non-2xx answer is a delivery GitHub marks failed in the App's log.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

EXAMPLES = json.loads((Path(__file__).parent / "openapi" / "webhook-examples.json").read_text())


def test_every_event_github_describes_is_vendored():
    events = {example["event"] for example in EXAMPLES.values()}
    assert len(EXAMPLES) > 250
    assert {"projects_v2_item", "projects_v2_status_update", "sub_issues"} <= events


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_signed_well_formed_delivery_is_answered_2xx(receiver, key: str):
    example = EXAMPLES[key]
    response = receiver.deliver(example["event"], example["payload"], delivery_id=str(uuid.uuid4()))
    assert 200 <= response.status_code < 300, (example["event"], response.text)
