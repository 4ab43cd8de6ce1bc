"""GET /metrics: deliveries by event and outcome, ack latency, queue depths, tasks by state, and
the figures the workers keep in Redis (`codexbot.fleetmetrics`)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue

from codexbot import fleetmetrics, keys
from codexbot.fleetmetrics import APP_ACCOUNT, WorkerMetrics
from sim.github import GitHubSim, generate_app_key
from sim.stack import free_port, wait_until
from tests.test_receiver import Served, labeled
from workers.github import GitHubError
from workers.githubapp import GitHubApp


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


# -- the workers' figures: written to Redis by any host, read by the receiver when scraped ------


def test_worker_figures_from_several_hosts_add_up_in_one_scrape(receiver, redis_url):
    hosts = [WorkerMetrics(Redis.from_url(redis_url)) for _ in range(2)]  # a client each
    hosts[0].task_finished("fix", "done", 42.0)
    hosts[1].task_finished("fix", "done", 700.0)
    hosts[1].task_finished("ask", "failed", 5.0)
    hosts[0].model_call(1.5, prompt_tokens=900, completion_tokens=100)
    hosts[1].model_call(0.2, prompt_tokens=50, completion_tokens=7)
    hosts[1].model_call(30.0, error="timeout")
    hosts[0].github_answered("octo-org", status="404", remaining=4990, limit=5000)
    hosts[1].github_answered("Octo-Org", status=None, remaining=4980, limit=5000)
    hosts[1].github_answered(APP_ACCOUNT, status="network", remaining=-1, limit=-1)
    samples = scrape(receiver.url)
    finished = "codexbot_tasks_finished_total"
    assert value(samples, finished, kind="fix", outcome="done") == 2
    assert value(samples, finished, kind="ask", outcome="failed") == 1
    duration = "codexbot_task_duration_seconds"
    assert value(samples, f"{duration}_count", kind="fix") == 2
    assert value(samples, f"{duration}_sum", kind="fix") == 742.0
    assert value(samples, f"{duration}_bucket", kind="fix", le="60.0") == 1  # cumulative
    assert value(samples, f"{duration}_bucket", kind="fix", le="1200.0") == 2
    assert value(samples, f"{duration}_bucket", kind="fix", le="+Inf") == 2
    assert value(samples, "codexbot_model_tokens_total", type="prompt") == 950
    assert value(samples, "codexbot_model_tokens_total", type="completion") == 107
    assert value(samples, "codexbot_model_call_seconds_count", result="ok") == 2
    assert value(samples, "codexbot_model_call_seconds_bucket", result="ok", le="0.25") == 1
    assert value(samples, "codexbot_model_call_seconds_count", result="error") == 1
    assert value(samples, "codexbot_model_errors_total", kind="timeout") == 1
    assert value(samples, "codexbot_github_api_errors_total", status="404") == 1
    assert value(samples, "codexbot_github_api_errors_total", status="network") == 1
    assert value(samples, "codexbot_github_rate_limit_remaining", account="octo-org") == 4980
    assert value(samples, "codexbot_github_rate_limit", account="octo-org") == 5000
    assert ("codexbot_github_rate_limit_remaining", (("account", APP_ACCOUNT),)) not in samples


def test_sandbox_counts_are_summed_over_engines_while_fresh(redis):
    meter = WorkerMetrics(redis)
    meter.sandboxes_seen("engine-a", "host-a", 3)
    meter.sandboxes_seen("engine-a", "host-a", 2)  # a second worker on the same engine
    meter.sandboxes_seen("engine-b", "host-b", 1)
    now = time.time()
    shown = {
        tuple(sample.labels.values()): sample.value
        for family in fleetmetrics.collect(redis, now=now)
        if family.name == "codexbot_sandboxes"
        for sample in family.samples
    }
    assert shown == {("engine-a", "host-a"): 2, ("engine-b", "host-b"): 1}
    later = now + fleetmetrics.SANDBOXES_FRESH_SECONDS + 1  # its workers stopped reporting
    assert not [
        family.samples
        for family in fleetmetrics.collect(redis, now=later)
        if family.name == "codexbot_sandboxes" and family.samples
    ]


def test_a_worker_whose_redis_is_gone_records_nothing_and_goes_on():
    gone = Redis(port=free_port(), socket_connect_timeout=0.5)
    meter = WorkerMetrics(gone)
    meter.task_finished("fix", "done", 1.0)  # no exception: a figure never fails a task
    meter.model_call(1.0, prompt_tokens=1)
    meter.github_answered("octo-org", status="500", remaining=1, limit=2)


def test_github_answers_show_their_errors_and_rate_limit(receiver, redis, tmp_path):
    private, public = generate_app_key()
    source = tmp_path / "source"
    source.mkdir()
    (source / "README.md").write_text("# widgets\n")
    with GitHubSim(4242, public, None, "unused", tmp_path / "github") as github:
        github.create_repo("octo-org/widgets", source, installation_id=7)
        issue = github.create_issue("octo-org/widgets", "A title", "A body")
        app = GitHubApp(
            app_id=4242,
            private_key=private.decode(),
            api_url=github.api_url,
            meter=WorkerMetrics(redis),
        )
        repository = app.repository("octo-org/widgets", app.installation_token(7))
        assert repository.issue(issue["number"]).title == "A title"
        with pytest.raises(GitHubError):
            repository.issue(9999)
        assert repository.branch_head("no-such-branch") is None  # a 404 the caller expected
        last = requests.get(f"{github.api_url}/zen", timeout=5)
        repository.close()
    samples = scrape(receiver.url)
    assert value(samples, "codexbot_github_api_errors_total", status="404") == 2
    remaining = value(samples, "codexbot_github_rate_limit_remaining", account="octo-org")
    # The simulator counts down one shared budget: the last answer the worker saw came just
    # before the one this test asked for.
    assert remaining == int(last.headers["X-RateLimit-Remaining"]) + 1
    assert value(samples, "codexbot_github_rate_limit", account="octo-org") == int(
        last.headers["X-RateLimit-Limit"]
    )
    assert value(samples, "codexbot_github_rate_limit_remaining", account=APP_ACCOUNT) > 0
