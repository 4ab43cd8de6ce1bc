"""The sandbox the agent and the job share: the patch and the tests after, known before the agent
is done (its own last run of the test command, or the run ahead while the model answers), on a
real container. Every run of the test command below counts itself in a file outside the
workspace."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import docker
import pytest

from sandbox.changes import CLOCK_SLACK, GUARD_DIR_PREFIX, ChangeGuard, ChangePolicy
from sandbox.container import Sandbox
from sandbox.labels import remove_task_containers
from sim.stack import wait_until
from tests.sandbox.conftest import git, make_repo
from workers.agentbox import RAN_AHEAD_NOTE, AgentBox, Baseline, TestOutcome

# Counts its runs in /tmp (outside the workspace), then runs the project's one test.
TEST_COMMAND = "echo run >> /tmp/runs; python3 -m pytest -q -p no:cacheprovider"


@pytest.fixture
def box(
    docker_client: docker.DockerClient, sandbox_image: str, tmp_path: Path
) -> Iterator[tuple[Sandbox, Baseline]]:
    repo = make_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    task = f"test-agentbox-{uuid.uuid4().hex[:8]}"
    try:
        with Sandbox(docker_client, image=sandbox_image, task_id=task) as sandbox:
            sandbox.put_workspace(repo)
            guard = ChangeGuard(sandbox, base, ChangePolicy())
            yield sandbox, Baseline(sandbox, guard, TestOutcome(None))
    finally:
        remove_task_containers(docker_client, task)


def agent_box(baseline: Baseline, command: str = TEST_COMMAND) -> AgentBox:
    ready: Future[Baseline] = Future()
    ready.set_result(baseline)
    return AgentBox(ready, command, ahead=True)


def runs(sandbox: Sandbox) -> int:
    return int(sandbox.exec("cat /tmp/runs 2>/dev/null | wc -l", workdir="/").output)


BREAK = "printf 'def add(a, b):\\n    return a - b\\n' > calc.py"


@pytest.mark.docker
def test_the_agents_own_last_run_of_the_test_command_is_the_tests_after(
    box: tuple[Sandbox, Baseline],
) -> None:
    sandbox, baseline = box
    env = agent_box(baseline)
    env.exec(BREAK, timeout=30)
    ran = env.exec(TEST_COMMAND, timeout=60)
    assert ran.exit_code == 1
    env.before_model()  # only the patch ahead: the agent has just run the tests
    known = env.at_finish()
    assert known.changes is not None and known.changes.changed_files == ("calc.py",)
    after = known.tests_after()
    assert after is not None and after.run is not None
    assert (after.run.command, after.run.exit_code) == (TEST_COMMAND, 1)
    assert "1 failed" in after.run.tail
    assert runs(sandbox) == 1


@pytest.mark.docker
def test_a_command_after_the_agents_run_or_a_run_from_elsewhere_is_not_taken(
    box: tuple[Sandbox, Baseline],
) -> None:
    sandbox, baseline = box
    env = agent_box(baseline)
    env.exec(TEST_COMMAND, timeout=60)
    env.exec("cat calc.py", timeout=30)
    assert env.at_finish().tests_after() is None

    env = agent_box(baseline)
    env.exec("mkdir -p sub && cd sub", timeout=30)
    env.exec(TEST_COMMAND, timeout=60)  # started in /workspace/sub: not the bot's run
    assert env.at_finish().tests_after() is None


@pytest.mark.docker
def test_the_tests_run_ahead_while_the_model_answers(box: tuple[Sandbox, Baseline]) -> None:
    sandbox, baseline = box
    env = agent_box(baseline)
    env.exec("cat calc.py", timeout=30)
    env.before_model()  # only read: nothing to test
    env.exec(BREAK, timeout=30)
    env.before_model()
    env.before_model()  # the run under way is the one for this workspace
    after = env.at_finish().tests_after()
    assert after is not None and after.run is not None and after.run.exit_code == 1
    assert runs(sandbox) == 1
    # The workspace is as the agent left it: the run added nothing a patch would carry.
    assert sandbox.exec("git status --porcelain").output == " M calc.py\n"


@pytest.mark.docker
def test_the_agents_next_command_cancels_the_run_ahead(box: tuple[Sandbox, Baseline]) -> None:
    sandbox, baseline = box
    slow = "touch /tmp/started; sleep 600; touch /tmp/finished"
    env = agent_box(baseline, slow)
    env.exec(BREAK, timeout=30)
    env.before_model()

    def listed() -> str:  # a plain `docker exec`: the exec server is busy with the run
        return sandbox.exec_as_root(["ls", "/tmp"])[1].decode()

    wait_until(lambda: "started" in listed(), 30, "the run ahead to start")
    # It does not wait the run's ten minutes out (the test's own timeout would end it first).
    assert env.exec("echo next", timeout=30).output == "next\n"
    assert env.at_finish().tests_after() is None
    assert "finished" not in listed()


@pytest.mark.docker
def test_a_run_ahead_that_changes_the_workspace_is_not_repeated(
    box: tuple[Sandbox, Baseline],
) -> None:
    sandbox, baseline = box
    env = agent_box(baseline, "echo run >> /tmp/runs; date +%N > report.txt")
    env.exec(BREAK, timeout=30)
    env.before_model()
    ahead = env._running
    assert ahead is not None
    wait_until(lambda: not ahead.is_alive(), 60, "the run ahead to end")
    env.exec("echo 'X = 1' > more.py", timeout=30)  # it wrote report.txt behind the agent's back
    env.before_model()
    known = env.at_finish()
    assert known.tests_after() is None
    assert known.changes is not None and b"more.py" in known.changes.patch
    assert runs(sandbox) == 1


@pytest.mark.docker
def test_at_the_finish_the_patch_is_known_while_the_tests_ahead_still_run(
    box: tuple[Sandbox, Baseline],
) -> None:
    sandbox, baseline = box
    waits = "while [ ! -e /tmp/go ]; do sleep 0.05; done; date +%N > report.txt; echo passed"
    env = agent_box(baseline, waits)
    env.exec(BREAK, timeout=30)
    env.before_model()
    known = env.at_finish()
    assert known.changes is not None
    assert known.changes.changed_files == ("calc.py",)
    sandbox.exec_as_root(["touch", "/tmp/go"])
    after = known.tests_after()
    assert after is not None and after.run is not None
    assert (after.run.exit_code, after.run.tail) == (0, "passed")
    # What the tests wrote after the patch was taken is not in it.
    assert b"report.txt" not in known.changes.patch


@pytest.mark.docker
def test_the_guards_digest_follows_what_a_patch_carries(box: tuple[Sandbox, Baseline]) -> None:
    sandbox, baseline = box
    guard = baseline.guard
    untouched = guard.state()
    sandbox.exec("mkdir -p cache && echo x > cache/.gitignore.not")
    assert guard.state() != untouched
    sandbox.exec("rm -r cache && echo '*.log' > .git/info/exclude && echo x > out.log")
    changed_meta = guard.state()  # the git metadata is part of it; the ignored file is not
    assert changed_meta != untouched
    sandbox.exec("rm out.log")
    assert guard.state() == changed_meta
    sandbox.exec(BREAK)
    broken = guard.state()
    sandbox.exec("git checkout -q calc.py")
    assert guard.state() == changed_meta != broken


@pytest.mark.docker
def test_after_the_tests_before_the_guard_catches_up_but_keeps_a_refusal_to_tell(
    box: tuple[Sandbox, Baseline],
) -> None:
    sandbox, baseline = box
    guard = baseline.guard
    time.sleep(2 * CLOCK_SLACK)  # the checkout just written ages past a look's slack

    def looks() -> str:  # each full look stages in a git directory of its own, under a new name
        return sandbox.exec(f"ls -d {GUARD_DIR_PREFIX}*", workdir="/").output

    sandbox.exec("echo 'X = 1' > written_by_tests.py")  # as the tests before might
    guard.catch_up()
    looked = looks()
    sandbox.exec("cat calc.py")
    assert guard.after_command() == ""
    assert looks() == looked, "the agent's first command needs only the quick look"

    sandbox.exec("ln -s /etc/passwd leak")  # a refusal the agent has not heard of
    guard.catch_up()
    assert "leak: a symlink pointing outside the workspace" in guard.after_command()


@pytest.mark.docker
def test_the_agents_test_command_after_a_run_ahead_of_it_gets_that_run_once(
    box: tuple[Sandbox, Baseline],
) -> None:
    sandbox, baseline = box
    env = agent_box(baseline)
    env.exec(BREAK, timeout=30)
    env.before_model()
    ahead = env._running
    assert ahead is not None
    wait_until(lambda: not ahead.is_alive(), 60, "the run ahead to end")
    served = env.exec(TEST_COMMAND, timeout=60)
    assert (served.exit_code, served.output.endswith(RAN_AHEAD_NOTE)) == (1, True)
    assert "1 failed" in served.output
    assert runs(sandbox) == 1  # the agent's command did not run the tests again
    after = env.at_finish().tests_after()
    assert after is not None and after.run is not None and after.run.exit_code == 1
    assert "1 failed" in after.run.tail and "bot ran" not in after.run.tail  # the agent's note
    again = env.exec(TEST_COMMAND, timeout=60)  # once: now it runs
    assert RAN_AHEAD_NOTE not in again.output and runs(sandbox) == 2

    # A command that is not the test command, or a run ahead that timed out for it: run.
    env.exec("printf 'def add(a, b):\\n    return a + b\\n' > calc.py", timeout=30)
    env.before_model()
    ahead = env._running
    assert ahead is not None
    wait_until(lambda: not ahead.is_alive(), 60, "the run ahead to end")
    assert RAN_AHEAD_NOTE not in env.exec(TEST_COMMAND, timeout=0.001).output
