"""The task's sandbox as the job and the agent share it: started while the model reads the task,
the baseline (the change guard's start and the tests before), and the end of the agent's work,
often known before the agent says it is done.

    start = SandboxStart(helpers, enter)  # enter(stack, prepared) -> Baseline, in the background
    env = AgentBox(start.baseline, test_command, ahead=True)  # the agent loop's tools run here
    ...                                   # the agent loop: env.before_model() before each call
    known = env.at_finish()
    changes = known.changes or baseline.guard.result()
    after = known.tests_after() or verify_with_tests(sandbox, test_command)

Before each model call after the agent ran a command, while the model answers (`ahead`, the
setting `CODEX_TESTS_AHEAD`): the change guard takes the workspace's patch, and the test command
runs on it. The agent's next command cancels that run first (it never waits for it, and the two
never share the sandbox). When the agent is done without another command, the patch is that one
and the tests after are that run, waited for if still going, while the change is pushed. The
agent's own last command stands for the tests after instead when it was the test command, started
in /workspace, ran to its end, and nothing ran after it. When the agent's next command is that
very test command, from /workspace, and the run ahead of it is done (and ended in /workspace,
within the command's timeout), the agent gets that run's result, marked so, instead of waiting
for the same run again: once, since its command counts as one run since (a build cache's test
result, as Bazel keeps one for unchanged inputs). A run ahead that writes what a patch would carry
(a report file, say) changed the workspace behind the agent's back: the task runs the tests ahead
no more (the patch it tested was taken before, so its result still holds).

All of these run in the agent's container, as the sandbox user, like the bot's own run after
the agent: they are as trustworthy as it, and no more.
"""

from __future__ import annotations

import contextvars
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, wait
from contextlib import ExitStack
from dataclasses import dataclass

import structlog

from sandbox.changes import ChangeGuard, ChangePolicy, WorkspaceResult
from sandbox.container import ExecResult, Sandbox
from sandbox.hardening import WORKSPACE
from workers import checkout, repoconfig, text
from workers.concurrency import Timings, in_background

log = structlog.get_logger(__name__)

TEST_TIMEOUT = 900
CANCEL_POLL_SECONDS = 0.005
RAN_AHEAD_NOTE = (
    "\n[the bot ran this very command on this same workspace while the model answered, with "
    "nothing run since: this is that run's result]"
)


@dataclass(frozen=True)
class TestOutcome:
    __test__ = False  # not a pytest class

    run: text.TestRun | None
    output: str = ""


def test_json(outcome: TestOutcome) -> dict | None:
    """A test run as a task's outcome records it."""
    run = outcome.run
    return None if run is None else {"command": run.command, "exit_code": run.exit_code}


def test_outcome(command: str, result: ExecResult) -> TestOutcome:
    tail = text.tail_lines(result.output)
    return TestOutcome(
        text.TestRun(command=command, exit_code=result.exit_code, tail=tail), result.output
    )


def verify_with_tests(sandbox: Sandbox, command: str | None) -> TestOutcome:
    """The test command, run from /workspace whatever directory the agent ended in."""
    if command is None:
        return TestOutcome(None)
    return test_outcome(command, sandbox.exec(command, timeout=TEST_TIMEOUT, workdir=WORKSPACE))


@dataclass(frozen=True)
class Baseline:
    """The untouched workspace: its sandbox, the change guard's start, and the tests before."""

    sandbox: Sandbox
    guard: ChangeGuard
    tests: TestOutcome


def take_baseline(
    sandbox: Sandbox,
    start: checkout.Checkout,
    config: repoconfig.RepoConfig,
    test_command: str | None,
    timings: Timings,
) -> Baseline:
    guard = ChangeGuard(sandbox, start.base_sha, ChangePolicy.from_config(config))
    with timings.stage("tests_before"):
        tests = verify_with_tests(sandbox, test_command)
    if test_command is not None:
        guard.catch_up()  # what the tests wrote, looked at before the agent's first command
    return Baseline(sandbox, guard, tests)


class SandboxStart:
    """The task's sandbox and baseline, made on a helper thread while the model reads the task.

    `enter(stack, prepared)` enters the sandbox's context on `stack`, calls `prepared()` once the
    environment is prepared (setup ran or was reused) and returns the baseline. `close()`, once
    it is done, leaves that context: the sandbox goes."""

    def __init__(
        self, helpers: Executor, enter: Callable[[ExitStack, Callable[[], None]], Baseline]
    ) -> None:
        self._stack = ExitStack()
        self._prepared = threading.Event()
        self.baseline: Future[Baseline] = in_background(
            helpers, enter, self._stack, self._prepared.set
        )
        # Set after the future is done, so a failure is seen by `wait_for_environment`.
        self.baseline.add_done_callback(lambda _: self._prepared.set())

    def wait_for_environment(self) -> None:
        """Return once the environment is prepared; raise what failed before that (a setup
        command, say), so that a failed setup costs no model call."""
        self._prepared.wait()
        if self.baseline.done():
            self.baseline.result()

    def close(self) -> None:
        wait([self.baseline])
        self._stack.close()


def whole_run(result: ExecResult) -> bool:
    """The command ran to its own end: not timed out, stopped, killed for memory, or lost."""
    return not (result.timed_out or result.stopped or result.lost or result.notes)


class RunAhead(threading.Thread):
    """While the model answers: the patch of the workspace as it is at `touch`, then (with a
    `command`) the tests on it."""

    def __init__(
        self,
        baseline: Baseline,
        command: str | None,
        touch: int,
        on_patch: Callable[[WorkspaceResult], object] | None = None,
    ) -> None:
        super().__init__(name="ahead", daemon=True)
        self.baseline = baseline
        self.on_patch = on_patch
        self.command = command
        self.touch = touch
        self.changes: WorkspaceResult | None = None
        self.taken = threading.Event()  # the patch is taken, or will never be
        self.outcome: TestOutcome | None = None
        self.result: ExecResult | None = None  # the test command's, when it ran to its end
        self.changed_workspace = False  # the tests wrote what a patch would carry
        self.abandoned = False
        self._context = contextvars.copy_context()  # logs name the task

    def run(self) -> None:
        self._context.run(self._run)

    def _run(self) -> None:
        guard, sandbox = self.baseline.guard, self.baseline.sandbox
        try:
            self.changes = changes = guard.result()
            if self.on_patch is not None and not self.abandoned:
                self.on_patch(changes)
            self.taken.set()
            if self.command is None or changes.state == guard.start_state or self.abandoned:
                return  # no tests wanted, or nothing to test: a run that changed nothing
            result = sandbox.exec(self.command, timeout=TEST_TIMEOUT, workdir=WORKSPACE)
            if self.abandoned or not whole_run(result):
                return
            self.result = result
            self.outcome = test_outcome(self.command, result)
            self.changed_workspace = guard.state() != changes.state
        except Exception as error:  # noqa: BLE001 - what it did not do is done after, as before
            if not self.abandoned:
                log.warning("ahead.failed", error=str(error)[:300])
        finally:
            self.taken.set()

    def abandon(self) -> None:
        """Stop it at once: its command is cancelled until the thread ends."""
        self.abandoned = True
        while self.is_alive():
            self.baseline.sandbox.cancel("the agent went on")
            self.join(CANCEL_POLL_SECONDS)


@dataclass
class Known:
    """What is known of the workspace the agent left when it is done: its patch, taken while
    the model answered, and the tests after (the agent's own run, or one ahead, maybe still
    going: `tests_after` waits for it)."""

    changes: WorkspaceResult | None = None
    own_run: TestOutcome | None = None
    ahead: RunAhead | None = None

    def tests_after(self) -> TestOutcome | None:
        if self.own_run is not None:
            return self.own_run
        if self.ahead is None:
            return None
        self.ahead.join()
        return self.ahead.outcome  # on the patch's workspace, whatever the run left after

    def abandon(self) -> None:
        """The task ends another way: no run outlives it."""
        if self.ahead is not None:
            self.ahead.abandon()


class AgentBox:
    """The sandbox as the agent sees it: a command waits until the baseline is taken (so the
    agent never changes the workspace under the tests before) and for nothing else."""

    def __init__(
        self,
        baseline: Future[Baseline],
        test_command: str | None = None,
        ahead: bool = False,
        on_patch: Callable[[WorkspaceResult], object] | None = None,
    ) -> None:
        """``on_patch``: told of each patch taken ahead, on that thread (the worker applies it
        to its checkout meanwhile); the agent's next command waits for it, at most."""
        self._baseline = baseline
        self._on_patch = on_patch
        self._command = test_command
        self._ahead = ahead
        self._tests_ahead = ahead and test_command is not None
        self.ran_into: list[str] = []  # what the agent's commands ran into, once each kind
        self._cwd = WORKSPACE  # where the agent's next command starts
        self._touches = 0  # the agent's commands so far
        self._own_run: tuple[int, TestOutcome] | None = None  # its last whole test run
        self._running: RunAhead | None = None

    def exec(self, command: str, *, timeout: float) -> ExecResult:
        baseline = self._baseline.result()  # raises what went wrong taking it
        ran = self._ran_ahead(command, timeout)
        self._settle()
        self._touches += 1
        started_in = self._cwd
        if ran is not None:
            log.info("ahead.served", command=command[:200], duration_ms=ran.duration_ms)
        result = ran if ran is not None else baseline.sandbox.exec(command, timeout=timeout)
        shown = result
        if ran is not None:
            shown = dataclasses.replace(ran, command=command, output=ran.output + RAN_AHEAD_NOTE)
        self._cwd = result.cwd
        for note in result.notes:
            kind = note.split(":")[0].split("(")[0]
            if not any(seen.startswith(kind) for seen in self.ran_into):
                self.ran_into.append(note)
        if (
            self._command is not None
            and command.strip() == self._command.strip()
            and started_in == WORKSPACE
            and whole_run(result)
        ):
            self._own_run = (self._touches, test_outcome(self._command, result))
        return shown

    def _ran_ahead(self, command: str, timeout: float) -> ExecResult | None:
        """The run ahead of this very command on this very workspace, done, from /workspace and
        ending there, within `timeout`, with nothing run since: the agent gets its result (once:
        the agent's command counts as one run since) instead of waiting for the same run again."""
        running = self._running
        if (
            running is None
            or running.is_alive()
            or running.touch != self._touches
            or running.command is None
            or running.result is None
            or running.changed_workspace
            or self._cwd != WORKSPACE
            or command.strip() != running.command.strip()
            or running.result.ended_in != WORKSPACE
            or running.result.duration_ms > timeout * 1000
        ):
            return None
        return running.result

    def after_change(self) -> str:
        """What the change guard refuses of the workspace now and has not said yet, or "".

        The agent loop calls it after a tool that may change files and shows the note with that
        tool's result, so the agent can take another way at once."""
        baseline = self._baseline.result()
        self._settle()
        return baseline.guard.after_command().strip()

    def cancel(self, reason: str) -> bool:
        """A stop kills the command running now, the tests before included."""
        if not self._baseline.done():
            return False  # the sandbox is still starting; the stop watch asks again
        try:
            return self._baseline.result().sandbox.cancel(reason)
        except Exception:  # noqa: BLE001 - the baseline's failure is the agent's next command's
            return False

    def before_model(self) -> None:
        """The model is about to be asked: take the patch ahead, and run the tests on it, if
        the agent ran a command since the last time (and not the tests themselves, last)."""
        if not self._ahead or self._touches == 0:
            return
        if self._running is not None and self._running.touch == self._touches:
            return  # under way, or done, on the workspace as it is
        if not self._baseline.done() or self._baseline.exception() is not None:
            return
        self._settle()
        ran_them = self._own_run is not None and self._own_run[0] == self._touches
        command = self._command if self._tests_ahead and not ran_them else None
        self._running = RunAhead(self._baseline.result(), command, self._touches, self._on_patch)
        self._running.start()

    def at_finish(self) -> Known:
        """What is known of the workspace now, once the agent is done; call it before anything
        else uses the sandbox. A run ahead on this workspace is handed over, still going."""
        own = self._own_run[1] if self._own_run and self._own_run[0] == self._touches else None
        running = self._running
        if running is None or running.touch != self._touches:
            self._settle()
            return Known(own_run=own)
        self._running = None
        running.taken.wait()
        return Known(running.changes, own, running if running.command else None)

    def close(self) -> None:
        """No run ahead outlives the agent (but the one `at_finish` handed over)."""
        self._settle()

    def _settle(self) -> None:
        running, self._running = self._running, None
        if running is None:
            return
        running.abandon()
        if running.changed_workspace:
            # What it wrote is in the workspace now, as if the agent had run the tests: no more
            # test runs behind the agent's back.
            log.info("ahead.changed_workspace", command=self._command)
            self._tests_ahead = False
