"""GET /metrics: deliveries by event and outcome, ack latency, queue depths, tasks by state."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from codexbot import keys
from sim.stack import wait_until
from tests.test_receiver import Served, labeled


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_deliveries_are_counted_by_event_and_outcome(receiver):
    receiver.deliver("issues", labeled(), delivery_id="m-1")
    receiver.deliver("issues", labeled(), delivery_id="m-1")
    receiver.deliver("issues", labeled(label="bug"))
    receiver.deliver("ping", {"zen": "Speak like a human."})
    receiver.deliver("issues", labeled(), headers={"X-Hub-Signature-256": "sha256=00"})
    receiver.deliver("issues", b"{broken")
    receiver.deliver("x" * 60, {"action": "made_up"})  # unknown events share one label
    samples = scrape(receiver.url)
    counted = "codexbot_deliveries_total"
    assert value(samples, counted, event="issues", outcome="enqueued") == 1
    assert value(samples, counted, event="issues", outcome="duplicate") == 1
    assert value(samples, counted, event="issues", outcome="nothing_to_do") == 1
    assert value(samples, counted, event="ping", outcome="ignored") == 1
    assert value(samples, counted, event="unverified", outcome="bad_signature") == 1
    assert value(samples, counted, event="unverified", outcome="bad_request") == 1
    assert value(samples, counted, event="other", outcome="ignored") == 1
    assert value(samples, "codexbot_ack_seconds_count", outcome="enqueued") == 1
    assert value(samples, "codexbot_ack_seconds_bucket", outcome="enqueued", le="10.0") == 1


def test_queue_depths_and_tasks_by_state_are_read_from_redis(receiver, redis):
    receiver.deliver("issues", labeled(number=1))
    receiver.deliver("issues", labeled(number=2))
    Queue(receiver.settings.codex_queue, connection=redis).enqueue("os.getcwd")
    redis.sadd(keys.tasks_in_state("running"), "task-a", "task-b")
    redis.sadd(keys.tasks_in_state("queued"), "task-c")
    samples = scrape(receiver.url)
    fast, agent = receiver.settings.codex_fast_queue, receiver.settings.codex_queue
    assert value(samples, "codexbot_queue_depth", lane="intake", queue=fast) == 2
    assert value(samples, "codexbot_queue_depth", lane="agent", queue=agent) == 1
    assert value(samples, "codexbot_tasks", state="running") == 2
    assert value(samples, "codexbot_tasks", state="queued") == 1


def test_metrics_sum_over_every_worker_process(redis, tmp_path):
    """Under a multi-process server each worker counts its own; one scrape sums them all."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    served = Served(
        tmp_path, "--workers", "2", "--threads", "1", PROMETHEUS_MULTIPROC_DIR=str(shared)
    )
    sent = []

    def both_workers_counted() -> bool:
        with ThreadPoolExecutor(8) as pool:  # concurrent, so both workers take some
            batch = range(len(sent), len(sent) + 16)
            sent.extend(pool.map(lambda n: served.deliver("issues", labeled(number=n)), batch))
        return len({path.stem for path in shared.glob("counter_*.db")}) == 2

    try:
        wait_until(both_workers_counted, 20, "both workers to take deliveries")
        assert {response.status_code for response in sent} == {202}
        for _ in range(6):  # several scrapes, answered by either worker: the same totals
            samples = scrape(served.url)
            counted = value(
                samples, "codexbot_deliveries_total", event="issues", outcome="enqueued"
            )
            assert counted == len(sent)
            depth = value(samples, "codexbot_queue_depth", lane="intake", queue=served.fast_queue)
            assert depth == len(sent)
    finally:
        served.close()
