"""A real task moves the workers' figures on the receiver's /metrics, and the Grafana dashboard
asks only for metrics that the bot exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from sim.stack import Stack, wait_until
from tests.test_metrics import value

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "codex-bot.json"
METRIC_NAME = re.compile(r"\bcodexbot_[a-z_]+\b")
SERIES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def scrape_text(stack: Stack) -> str:
    response = requests.get(f"{stack.receiver_url}/metrics", timeout=5)
    assert response.status_code == 200
    return response.text


def samples_of(text: str) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def exported_series(text: str) -> dict[str, set[str]]:
    """Each family /metrics describes, and the series names a query may use of it."""
    return {
        family.name: {family.name + suffix for suffix in SERIES.get(family.type, ("",))}
        for family in text_string_to_metric_families(text)
    }


def dashboard_exprs(dashboard: dict) -> list[str]:
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


@pytest.fixture(scope="module")
def after_a_task(stack: Stack) -> dict:
    before = samples_of(scrape_text(stack))
    full_name, issue = stack.seed()
    _, task_id = stack.label(full_name, issue["number"])
    stack.wait_for_task(task_id, timeout=300)
    # The job returns before its `finally` has counted it: poll for the count.
    counted = "codexbot_tasks_finished_total"

    def moved() -> str | None:
        text = scrape_text(stack)
        done = value(samples_of(text), counted, kind="fix", outcome="done")
        return text if done > value(before, counted, kind="fix", outcome="done") else None

    text = wait_until(moved, 30, "the finished task on /metrics")
    return {"before": before, "after": samples_of(text), "text": text}


def test_a_task_moves_the_workers_figures(after_a_task):
    before, after = after_a_task["before"], after_a_task["after"]

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("codexbot_tasks_finished_total", kind="fix", outcome="done") == 1
    assert grew("codexbot_task_duration_seconds_count", kind="fix") == 1
    assert grew("codexbot_task_duration_seconds_sum", kind="fix") > 0
    assert grew("codexbot_model_tokens_total", type="prompt") > 0
    assert grew("codexbot_model_tokens_total", type="completion") > 0
    assert grew("codexbot_model_call_seconds_count", result="ok") > 0
    assert (
        0
        < value(after, "codexbot_github_rate_limit_remaining", account="octo-org")
        < value(after, "codexbot_github_rate_limit", account="octo-org")
    )
    engines = [
        labels for (name, labels) in after if name == "codexbot_sandboxes"
    ]  # the task worker's reaper reports its engine's count at once
    assert engines, "no engine reported its sandboxes"


def test_every_dashboard_query_names_a_metric_the_bot_exports(after_a_task):
    dashboard = json.loads(DASHBOARD.read_text())
    assert {"name": "datasource", "type": "datasource"}.items() <= dashboard["templating"]["list"][
        0
    ].items()
    exprs = dashboard_exprs(dashboard)
    assert exprs
    families = exported_series(after_a_task["text"])
    asked = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert asked - set().union(*families.values()) == set()
    # And each of the bot's families is on the dashboard, by one of its series.
    ours = {name for name in families if name.startswith("codexbot_")}
    assert {name for name in ours if not families[name] & asked} == set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
