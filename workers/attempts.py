"""Several tries at one task, chosen by the tests.

`attempts: N` in `.github/codex.yml` (or `/codex fix --attempts N`; at most `CODEX_MAX_ATTEMPTS`)
runs N agents on the same task at once, each in its own sandbox on the same prepared environment
and tree, each with its own trajectory (`<task>-try<k>`) and model seed, sharing one token budget
(`CODEX_ATTEMPTS_TOKENS`). The bot's own test run then decides (`rank`): passing tests beat
failing ones, then fewer failing tests, then the smaller diff, then fewer steps. The chosen try's
change is pushed and published as one try's would be; the pull request carries a table of all of
them. With `attempts_stop_on_green` (the default) the first try whose tests pass stops the others.

Each try's change stays in its trajectory (a `patch` record), and the task is remembered for its
issue or pull request, so `/codex fix --use-attempt K` publishes try K's change instead
(`use_earlier_try`), judged by the change guard and the tests like any change.

"Try" is this module's word: an *attempt* in `workers.tasks` and `workers.lease` is a run again
of the whole task after its worker was lost, and fences what a stale one may publish.
"""

from __future__ import annotations

import base64
import contextvars
import dataclasses
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import structlog

from codexbot import keys
from codexbot.commands import FixOptions, fix_options
from sandbox.changes import ChangePolicy, Refusal
from workers import checkout, repoconfig, text
from workers.agent.loop import AgentResult
from workers.agent.text import Comment, diff_counts
from workers.agentbox import AgentBox, TestOutcome, take_baseline, test_json, verify_with_tests
from workers.concurrency import Timings
from workers.publish import Publisher
from workers.run import (
    AgentControls,
    Briefing,
    ensure_agent_went_on,
    ensure_something_to_publish,
    model_for,
    run_agent_for,
    task_trajectory,
)
from workers.task import Task, TaskFailed, Work
from workers.testcmd import failed_tests
from workers.trajectories import RedisTrajectories
from workers.workspace import task_sandbox

log = structlog.get_logger()

PATCH_KINDS = frozenset({"fix", "review", "fix_ci"})  # the kinds whose result is a change
MAX_REPLAYED_PATCH = 96 * 1024  # a kept patch goes to the sandbox on one command line


def try_id(task_id: str, number: int) -> str:
    """The id a try's trajectory and sandbox go by."""
    return f"{task_id}-try{number}"


# -- how many, and which -----------------------------------------------------------------------


@dataclass(frozen=True)
class TryPlan:
    count: int = 1
    stop_on_green: bool = True
    use: int | None = None  # `--use-attempt K`: publish try K of the last task with tries


def options_of(task: Task) -> FixOptions:
    if task.record.request.kind != "fix":
        return FixOptions()
    options = fix_options(task.record.request.text)
    if options.problem:
        raise TaskFailed(options.problem)
    return options


def plan_tries(task: Task, config: repoconfig.RepoConfig) -> TryPlan:
    """The tries a task runs: what the command or the config asks, within the setting's cap."""
    if task.record.request.kind not in PATCH_KINDS:
        return TryPlan()
    options = options_of(task)
    asked = options.attempts or config.attempts
    count = min(asked, task.settings.codex_max_attempts)
    return TryPlan(count, config.attempts_stop_on_green, options.use_attempt)


@dataclass
class TryOutcome:
    """What one try left: its result, its change as the guard judged it, its tests."""

    number: int
    trajectory: str
    result: AgentResult | None = None
    patch: bytes = b""
    refusals: tuple[Refusal, ...] = ()
    policy: ChangePolicy | None = None
    before: TestOutcome = field(default_factory=lambda: TestOutcome(None))
    after: TestOutcome | None = None  # None: its tests did not run
    ran_into: tuple[str, ...] = ()
    error: str = ""  # the try failed (its sandbox, setup, the model)

    @property
    def green(self) -> bool:
        return self.after is not None and self.after.run is not None and self.after.run.passed

    @property
    def failing(self) -> int | None:
        """Failing tests after the try; a red run that names none counts one."""
        if self.after is None or self.after.run is None:
            return None
        if self.after.run.passed:
            return 0
        return max(1, len(failed_tests(self.after.output)))

    @property
    def counts(self) -> tuple[int, int]:
        """Lines added and removed by the try's change."""
        counted = diff_counts(self.patch.decode(errors="replace"))
        return sum(added for _, added, _ in counted), sum(gone for _, _, gone in counted)

    @property
    def tokens(self) -> int:
        result = self.result
        return 0 if result is None else result.prompt_tokens + result.completion_tokens

    @property
    def outcome(self) -> str:
        if self.error:
            return "error"
        if not self.patch.strip():
            return "stopped" if self.result and self.result.status == "stopped" else "no change"
        if self.after is None:
            return "stopped"
        if self.after.run is None:
            return "no tests"
        return "passed" if self.green else "failed"


def rank(tries: list[TryOutcome]) -> list[TryOutcome]:
    """Best first: a change before none; passing tests, then fewer failing tests, then the
    smaller diff, then fewer steps; the earlier try on a tie."""

    def key(one: TryOutcome) -> tuple[bool, bool, float, int, int, int]:
        failing = one.failing
        return (
            not one.patch.strip() or bool(one.error),
            not one.green,
            math.inf if failing is None else failing,
            sum(one.counts),
            one.result.steps if one.result else 0,
            one.number,
        )

    return sorted(tries, key=key)


def rows_of(task: Task, tries: list[TryOutcome]) -> list[text.TryRow]:
    url = getattr(task.settings, "task_url", None)
    return [
        text.TryRow(
            number=one.number,
            outcome=one.outcome,
            failing=one.failing,
            added=one.counts[0],
            removed=one.counts[1],
            steps=one.result.steps if one.result else 0,
            tokens=one.tokens,
            link=url(one.trajectory) if url else "",
        )
        for one in tries
    ]


# -- running them ------------------------------------------------------------------------------


class SharedRun:
    """What a task's tries share: the token budget, and which try passed the tests first."""

    def __init__(self, budget: int, stop_on_green: bool, count: int = 1) -> None:
        self.budget = budget
        self.stop_on_green = stop_on_green
        self.spent = 0
        self.steps = 0
        self.green_first: int | None = None
        self.lock = threading.Lock()
        # Steering comments not yet seen by each try: whichever try takes one gives it to all.
        self.inboxes: dict[int, list[Comment]] = {n: [] for n in range(1, count + 1)}

    def deliver(self, comments: list[Comment], number: int) -> list[Comment]:
        """`comments` (just taken) to every try; what try `number` has not seen yet."""
        with self.lock:
            for inbox in self.inboxes.values():
                inbox.extend(comments)
            mine = self.inboxes.setdefault(number, [])
            self.inboxes[number] = []
            return mine

    def spend(self, tokens: int) -> None:
        with self.lock:
            self.spent += tokens

    def passed(self, number: int) -> None:
        with self.lock:
            if self.green_first is None:
                self.green_first = number

    def green_stop(self, number: int) -> str | None:
        """Why try `number` stops for another that passed the tests, if it does."""
        first = self.green_first
        if self.stop_on_green and first is not None and first != number:
            return f"try {first} passed the tests first"
        return None

    def stop_reason(self, number: int) -> str | None:
        with self.lock:
            if reason := self.green_stop(number):
                return reason
            if self.spent >= self.budget:
                return f"the tries' shared budget of {self.budget} tokens is spent"
        return None


class TryControls(AgentControls):
    """A try's controls: the task's stop, and the others' (a green try, the spent budget).
    A steering comment, taken once by whichever try asks first, reaches every try."""

    def __init__(self, task: Task, shared: SharedRun, number: int) -> None:
        super().__init__(task)
        self._shared = shared
        self._number = number

    def should_stop(self) -> str | None:
        return super().should_stop() or self._shared.stop_reason(self._number)

    def steering(self) -> list[Comment]:
        return self._shared.deliver(super().steering(), self._number)

    def on_record(self, record: dict) -> None:
        if record.get("type") == "response":
            tokens = record.get("prompt_tokens", 0) + record.get("completion_tokens", 0)
            self._shared.spend(int(tokens))
        if record.get("type") == "tool":
            with self._shared.lock:
                self._shared.steps += 1
        super().on_record(record)

    def _show_progress(self, force: bool = False) -> None:
        with self._shared.lock:  # the progress comment shows every try's steps
            self.steps = self._shared.steps
            super()._show_progress(force)


@dataclass(frozen=True)
class Prepared:
    """What every try starts from: the checkout, the rules, and the agent's briefing."""

    work: Work
    start: checkout.Checkout
    mirror: Path
    config: repoconfig.RepoConfig
    test_command: str | None
    secrets: dict[str, str]
    briefing: Briefing


def run_one_try(task: Task, ready: Prepared, shared: SharedRun, number: int) -> TryOutcome:
    """One try in a sandbox of its own; what went wrong is its outcome, not the task's."""
    one = TryOutcome(number, try_id(task.id, number))
    client = docker.from_env()
    work = ready.work
    try:
        with task_sandbox(
            client,
            task.redis,
            base_image=task.settings.codex_sandbox_image,
            config=ready.config,
            start=ready.start,
            host_mirror=ready.mirror,
            repo=task.source.full_name,
            task_id=one.trajectory,
            setup_secrets=ready.secrets,
            env_scope=f"fork {work.pull.head_repo}" if work.from_fork and work.pull else "",
        ) as (sandbox, _):
            # The tests before the change are the same for all: the first try takes them.
            before = ready.test_command if number == 1 else None
            baseline = take_baseline(sandbox, ready.start, ready.config, before, Timings())
            taken: Future = Future()
            taken.set_result(baseline)
            env = AgentBox(taken, ready.test_command, ahead=task.settings.codex_tests_ahead)
            model = model_for(task, ready.config, seed=number)
            try:
                one.result = run_agent_for(
                    task,
                    work,
                    dataclasses.replace(ready.briefing, model=model),
                    env,
                    ready.config,
                    TryControls(task, shared, number),
                    trajectory_id=one.trajectory,
                )
                known = env.at_finish()
            finally:
                env.close()
                model.close()
            try:
                changes = known.changes or baseline.guard.result()
                one.before, one.policy = baseline.tests, baseline.guard.policy
                one.patch, one.refusals, one.ran_into = (
                    changes.patch,
                    changes.refusals,
                    tuple(env.ran_into),
                )
                keep_patch(task, one, ready.start.base_sha)
                if one.patch.strip() and not shared.green_stop(number):
                    after = known.tests_after()
                    one.after = after or verify_with_tests(sandbox, ready.test_command)
                    if one.green:
                        shared.passed(number)
            finally:
                known.abandon()
    except Exception as error:  # noqa: BLE001 - one try's failure; the others may still win
        log.warning("try failed", number=number, exc_info=True)
        one.error = task.redact(str(error)) or type(error).__name__
    finally:
        client.close()
    log.info("try done", number=number, outcome=one.outcome, tokens=one.tokens)
    return one


def keep_patch(task: Task, one: TryOutcome, base_sha: str) -> None:
    """The try's change, in its trajectory, for `/codex fix --use-attempt`."""
    if not one.patch.strip():
        return
    trajectory = task_trajectory(task, one.trajectory)
    result = one.result
    trajectory.record(
        "patch",
        result.steps if result else 0,
        base_sha=base_sha,
        patch=one.patch.decode(errors="replace"),
        title=result.title if result else "",
        summary=result.summary if result else "",
    )


def publish_best(task: Task, ready: Prepared, publisher: Publisher, plan: TryPlan) -> dict:
    """Run the tries, push the best one's change and publish it with the table of all."""
    shared = SharedRun(task.settings.codex_attempts_tokens, plan.stop_on_green, plan.count)
    task.advance("running", detail=f"{plan.count} tries at once; the tests choose.")
    try:
        with task.timings.stage("agent"), ThreadPoolExecutor(plan.count, "try") as pool:
            running = [
                pool.submit(contextvars.copy_context().run, run_one_try, task, ready, shared, n)
                for n in range(1, plan.count + 1)
            ]
            tries = [future.result() for future in running]
    finally:
        ready.briefing.model.close()
    best = rank(tries)[0]
    first = tries[0]
    if best.result is None or best.error:
        raise TaskFailed(f"every try failed; the first: {first.error}")
    ensure_agent_went_on(best.result)
    ensure_something_to_publish(best.result, best.patch)
    work, result = ready.work, best.result
    result.write_missing_finish(work.title, best.patch.decode(errors="replace"))
    assert best.policy is not None  # set with its patch
    pushed = publisher.push(task, work, ready.start, best.patch, result, best.policy)
    after = best.after or TestOutcome(None)
    stopped = [  # the tries a green one stopped: in their run, or before their tests
        one
        for one in tries
        if one.result is not None
        and shared.green_stop(one.number)
        and (one.result.status == "stopped" or (one.patch.strip() and one.after is None))
    ]
    green_first = shared.green_first if stopped else None
    table = text.tries_section(rows_of(task, tries), best.number, green_first)
    task.advance("publishing", commit=pushed.sha)
    with task.timings.stage("publish"):
        published = publisher.publish(
            task, work, pushed, result, (first.before, after), best.refusals, best.ran_into, table
        )
    remember(task)
    return {
        **published,
        "status": result.status,
        "steps": sum(one.result.steps for one in tries if one.result),
        "tokens": sum(one.tokens for one in tries),
        "tests_before": test_json(first.before),
        "tests_after": test_json(after),
        "patch": best.patch.decode(errors="replace"),
        "chosen_try": best.number,
        "tries": [dataclasses.asdict(row) for row in rows_of(task, tries)],
    }


def remember(task: Task) -> None:
    """This task's tries are the ones `--use-attempt` picks from on its issue or PR."""
    request = task.record.request
    task.redis.set(
        keys.tries(request.repo, request.number), task.id, ex=task.settings.codex_trajectory_ttl
    )


# -- publishing an earlier try -----------------------------------------------------------------


def kept_patch(task: Task, number: int) -> dict:
    """The `patch` record try `number` of the last task with tries on this issue or PR kept."""
    request = task.record.request
    earlier = task.redis.get(keys.tries(request.repo, request.number))
    if not earlier:
        raise TaskFailed("no earlier task ran several tries here, so there is no try to use")
    task_id = earlier.decode() if isinstance(earlier, bytes) else str(earlier)
    store = RedisTrajectories(task.redis, task.settings.codex_trajectory_ttl)
    kept = [r for r in store.read(try_id(task_id, number)) if r.get("type") == "patch"]
    if not kept:
        raise TaskFailed(
            f"try {number} of task `{task_id}` kept no change (it changed nothing, it never ran, "
            "or its trajectory expired)"
        )
    return kept[-1]


def use_earlier_try(task: Task, env: AgentBox, number: int) -> AgentResult:
    """Try `number`'s change written over the workspace (in place of an agent run): the files
    as they were where that try started, then its patch. The change guard and the tests judge
    the workspace as they would an agent's."""
    kept = kept_patch(task, number)
    patch = str(kept.get("patch", "")).encode()
    if len(patch) > MAX_REPLAYED_PATCH:
        raise TaskFailed(f"try {number}'s change is larger than {MAX_REPLAYED_PATCH} bytes")
    base = str(kept.get("base_sha", ""))
    if not base.isalnum():
        raise TaskFailed(f"try {number}'s change names no commit it started from")
    encoded = base64.b64encode(patch).decode()
    applied = env.exec(
        f"git restore --source={base} --staged --worktree -- . && "
        f"echo {encoded} | base64 -d | git apply --whitespace=nowarn -",
        timeout=120,
    )
    if applied.exit_code != 0:
        raise TaskFailed(
            f"try {number}'s change does not apply here: {text.tail_lines(applied.output, 5)}"
        )
    trajectory = task_trajectory(task)
    result = AgentResult(
        status="finished",
        title=str(kept.get("title", "")),
        summary=str(kept.get("summary", "")),
    )
    trajectory.record("result", 0, **dataclasses.asdict(result), used_try=number)
    return result
