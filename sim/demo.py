"""The bot's main job, offline: a labelled issue becomes a pull request.

    python -m sim.demo [--json] [--repo DIR --issue FILE]
                       [--model-base-url URL --model NAME | --real-model]

Starts Redis-backed ``codexbot serve`` and ``codexbot worker``, the GitHub simulator and the
scripted model; seeds a repository with a failing test and an issue; labels the issue through a
signed webhook delivery; waits for the pull request. Everything it started is stopped at the end.
``--real-model`` puts llama-server with Qwen2.5-Coder-1.5B (``make real-model``) in the script's
place.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests

from codexbot.logs import configure_logging
from sim.model import DIALECTS
from sim.realmodel import MODEL_NAME, RealModel, RealModelError, cost, missing
from sim.stack import DEMO_REPO, ROOT, Stack, StackError
from workers import tasks


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sim.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of prose"
    )
    parser.add_argument(
        "--repo", type=Path, help="a local repository to seed instead of the demo's"
    )
    parser.add_argument(
        "--issue", type=Path, help="issue file: first line the title, then the body"
    )
    parser.add_argument(
        "--model-base-url", help="an OpenAI-compatible endpoint instead of the script"
    )
    parser.add_argument("--model", default="scripted-model", help="model name for --model-base-url")
    parser.add_argument(
        "--real-model", action="store_true", help="serve the model from `make real-model` here"
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--dialect",
        choices=sorted(DIALECTS),
        default="native",
        help="how the scripted model speaks (see README, Model servers)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the PR")
    parser.add_argument("--no-bootstrap", action="store_true", help="skip scripts/bootstrap.sh")
    parser.add_argument("--verbose", action="store_true", help="show the simulators' own logs")
    args = parser.parse_args(argv)
    if (args.repo is None) != (args.issue is None):
        parser.error("--repo and --issue go together")
    if args.repo is not None and not args.repo.is_dir():
        parser.error(f"--repo {args.repo}: not a directory")
    if args.issue is not None and not args.issue.is_file():
        parser.error(f"--issue {args.issue}: not a file")
    if args.real_model and args.model_base_url:
        parser.error("--real-model and --model-base-url: choose one")
    if args.real_model and (reason := missing()):
        parser.error(reason)
    if args.model_base_url and not os.environ.get("OPENAI_API_KEY"):
        parser.error("--model-base-url needs OPENAI_API_KEY in the environment")
    return args


def say(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def report_server_cost(server: RealModel, before: dict[str, float]) -> None:
    """What the real model's server did during the run, on stderr, however the run ended."""
    try:
        spent = cost(before, server.metrics())
    except requests.RequestException:  # the server is gone; its own error is reported
        return
    print(
        f"real model: {spent['prompt_tokens']} prompt tokens "
        f"({100 * spent['cached_share']:.0f} % from its cache, the rest at "
        f"{spent['prompt_tokens_per_second']} tokens/s), {spent['generated_tokens']} generated "
        f"at {spent['generated_tokens_per_second']} tokens/s, {spent['server_seconds']} s",
        file=sys.stderr,
        flush=True,
    )


def told_on_issue(stack: Stack, repo: str, number: int) -> str | None:
    """Why a task failed, as the bot told it on the issue (a weak model's failure is a result)."""
    for comment in reversed(stack.github.issue_comments(repo, number)):
        for line in comment["body"].splitlines():
            if line.startswith("I could not finish this task"):
                return f"the bot said on issue #{number}: {line}"
    return None


class StageWatcher:
    """Prints the task's stage each time it changes, as its record and trajectory tell it."""

    def __init__(self, stack: Stack, task_id: str, quiet: bool) -> None:
        self.stack, self.task_id, self.quiet = stack, task_id, quiet
        self.shown = ""

    def __call__(self) -> None:
        record = tasks.load(self.stack.redis, self.task_id)
        if record is None:
            return
        stage: str = record.state
        if stage == "running":
            steps = [int(r.get("step") or 0) for r in self.stack.trajectory(self.task_id)]
            stage = f"running (step {max(steps, default=0)})"
        if stage != self.shown and stage not in tasks.FINAL_STATES:
            say(f"  {stage}", self.quiet)
        self.shown = stage


def run_demo(args: argparse.Namespace, data_dir: Path) -> dict:
    quiet = args.json
    options: dict = {
        "data_dir": data_dir,
        "redis_url": args.redis_url,
        "model_dialect": args.dialect,
    }
    if args.model_base_url:
        options.update(
            model_base_url=args.model_base_url,
            model_name=args.model,
            openai_api_key=os.environ["OPENAI_API_KEY"],
        )
    started = time.monotonic()
    with ExitStack() as running:
        if args.real_model:
            say("starting the real model (llama-server); loading takes a while", quiet)
            server = RealModel()
            base_url = running.enter_context(server)
            options.update(model_base_url=base_url, model_name=MODEL_NAME)
            say(f"real model on {base_url}", quiet)
            running.callback(report_server_cost, server, server.metrics())
        stack = running.enter_context(Stack(**options))
        say(f"receiver on {stack.receiver_url}, GitHub simulator on {stack.github.url}", quiet)
        repo, issue = stack.seed(args.repo or DEMO_REPO, args.issue)
        say(f"seeded {repo} with issue #{issue['number']}: {issue['title']}", quiet)
        delivery, task_id = stack.label(repo, issue["number"])
        say(
            f"labelled it 'codex'; the receiver answered 202 in {delivery.duration_ms:.0f} ms "
            f"(task {task_id}); waiting for the worker",
            quiet,
        )
        try:
            watcher = StageWatcher(stack, task_id, quiet)
            outcome = stack.wait_for_task(task_id, timeout=args.timeout, watch=watcher)
        except StackError:
            told = told_on_issue(stack, repo, issue["number"])
            if told is None:
                raise
            raise StackError(told) from None
        comments = stack.github.issue_comments(repo, issue["number"])
    timings = {"ack": round(delivery.duration_ms), **outcome["timings_ms"]}
    timings["demo_total"] = round((time.monotonic() - started) * 1000)
    return {
        "pr_url": outcome["pr_url"],
        "branch": outcome["branch"],
        "commit_message": outcome["commit_message"],
        "draft": outcome["draft"],
        "tests_before": outcome["tests_before"],
        "tests_after": outcome["tests_after"],
        "steps": outcome["steps"],
        "tokens": outcome["tokens"],
        "issue_comments": [comment["body"] for comment in comments],
        "timings_ms": timings,
        "patch": outcome["patch"],
    }


def report(result: dict) -> str:
    before, after = result["tests_before"], result["tests_after"]
    lines = [
        "",
        f"branch:  {result['branch']}",
        "commit:  " + result["commit_message"].splitlines()[0],
        (
            f"tests:   `{after['command']}` exit {before['exit_code']} before, "
            f"{after['exit_code']} after"
        )
        if before and after
        else "tests:   no test command found",
        f"agent:   {result['steps']} steps, {result['tokens']} tokens",
        "timings: " + ", ".join(f"{name} {ms} ms" for name, ms in result["timings_ms"].items()),
        "",
        result["patch"].rstrip(),
        "",
        f"logs: {result['logs']}",
        f"PR: {result['pr_url']}",
    ]
    return "\n".join(lines)


def keep_logs(data_dir: Path, logs: Path) -> None:
    """The bot's processes' logs, out of the data directory that is about to go."""
    for log in sorted((data_dir / "logs").glob("*.log")):
        shutil.copyfile(log, logs / log.name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # stdout carries only the result, stderr the demo's own messages; every log (the bot's
    # processes', the stand-ins' access logs) goes to a file in `logs`, or to stderr with
    # --verbose.
    logs = Path(tempfile.mkdtemp(prefix="codexbot-demo-logs-"))
    with ExitStack() as closing:
        stream = None
        if not args.verbose:
            stream = closing.enter_context((logs / "stand-ins.log").open("a", encoding="utf-8"))
        configure_logging(level=logging.INFO, stream=stream)
        return _run(args, logs)


def _run(args: argparse.Namespace, logs: Path) -> int:
    if not args.no_bootstrap:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "bootstrap.sh")], check=True, stdout=sys.stderr
        )
    with tempfile.TemporaryDirectory(prefix="codexbot-demo-") as tmp:
        try:
            result = run_demo(args, Path(tmp))
        except (StackError, RealModelError) as error:
            keep_logs(Path(tmp), logs)
            print(f"demo failed: {error}", file=sys.stderr)
            for log in sorted(logs.glob("*.log")):
                print(
                    f"--- {log.name} (last lines)\n"
                    + "\n".join(log.read_text(errors="replace").splitlines()[-20:]),
                    file=sys.stderr,
                )
            print(f"logs: {logs}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("demo interrupted; everything it started is stopped", file=sys.stderr)
            return 130
        finally:
            keep_logs(Path(tmp), logs)
    result["logs"] = str(logs)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
