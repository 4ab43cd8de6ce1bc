"""A scripted stand-in for the OpenAI chat completions API, served for real on loopback.

The bot's own OpenAI SDK client talks to it over HTTP. What the "model" answers is a script: a
list of steps, each one tool call, several tool calls, or a plain message. The server keeps no
conversation state: the step to play is the number of assistant messages already in the request,
so a retried or replayed request gets the same answer. Several scripts can be served at once; each
is chosen by a substring of the conversation's first user message (the task prompt, which holds the
issue title).

Fault injection: a step may carry ``{"error": 429, "retry_after": 1}`` or ``{"error": 500}``
(answered once per conversation and step, so the client's retry then succeeds) and
``{"delay": 0.5}`` (seconds to wait before answering) and ``{"trickle": 2}`` (the answer is sent one
byte every that many seconds, like a stalled server that keeps the connection alive) and
``{"pace": 0.01}`` (a streamed answer's chunks come that many seconds apart, like a slow model). A
step holding only fault keys applies to the next real step.

Streaming (``"stream": true``) is served as OpenAI, vLLM and llama.cpp do: server-sent events, a
``data:`` line per chunk (role, then reasoning and content a few characters at a time, each tool
call's id and name and then its arguments in pieces), the finish reason, the usage chunk when
``stream_options.include_usage`` asks for it, and ``data: [DONE]``. ``streaming`` says what the
server accepts: ``full``; ``no_stream_options`` (400 to ``stream_options``, as servers before it
existed); ``none`` (400 to ``stream``); ``ignored`` (a whole reply all the same, as some proxies
do). ``streams`` records, per streamed answer, how many chunks
it had and how many were sent before the client went away.

Flaky mode (``flaky=Flaky(rate, seed)`` for the whole server, ``--flaky RATE --flaky-seed N``, or
a script's ``"flaky": {"rate": ..., "seed": ...}``): each run of a task takes a wrong fix with that
probability, decided from the seed, the script and the request's own ``seed`` (the bot sends one
per try), so a run is played the same way on every request of its conversation. A wrong fix is
the script's ``"wrong"`` steps, else its steps with each `apply_patch` turned into a comment above
the code it should have changed: a change that leaves the bug.

Dialects: how the answer is spoken, per script (``"dialect"``) or for the whole server, after the
documented behaviour of real servers (see ``DIALECTS``). A script with ``"dialects": [...]`` is
also served once per dialect, matched by its ``match`` text followed by `` [dialect]``: a match
text that extends another wins over it, so the plain script still serves the plain title.

    python -m sim.model --port 8600 --script sim/scripts/demo_fix.json [--dialect hermes]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("scripted-model",)
DIALECTS = {
    "native": "tool calls in the `tool_calls` field (OpenAI, vLLM and llama.cpp with a parser)",
    "hermes": "`<tool_call>` JSON tags in the content, no `tool_calls` (vLLM without a parser)",
    "fenced_json": "```json blocks in the content (Qwen2.5-Coder under llama.cpp's template)",
    "mistral": "`[TOOL_CALLS]` and a JSON list in the content (Mistral without a parser)",
    "no_tools": "400 to any request with `tools`; then shell blocks and a finish marker in text",
    "reasoning": "`reasoning_content` and a `<think>` block before the content (DeepSeek-R1, "
    "Qwen3)",
    "context_limit": "400 context-length error once, when the prompt passes a size",
    "no_title": "`finish` without a `title`",
}
# A context_limit server refuses a prompt (once) when the conversation after the system and task
# messages passes this many JSON characters: in the demo, at its fourth step.
CONTEXT_LIMIT_CHARS = 4_000
TOOLS_REFUSAL = (
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
)
CONTEXT_REFUSAL = "the request exceeds the available context size, try increasing it"
TEXT_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
FAULT_KEYS = frozenset({"error", "retry_after", "delay", "trickle", "pace"})
STREAMING = ("full", "no_stream_options", "none", "ignored")
STREAM_OPTIONS_REFUSAL = "Unrecognized request argument supplied: stream_options"
STREAM_REFUSAL = "streaming is not supported by this server; send stream=false"
CHUNK_CHARS = 8  # characters of content or arguments per chunk: about two tokens
ANSWER_KEYS = frozenset({"tool", "arguments", "tool_calls", "content"})
API_KEY_ENV = "SIM_MODEL_API_KEY"
OUT_OF_SCRIPT = {
    "title": "Stop: the scripted model ran out of steps",
    "summary": "The scripted model has no more steps for this conversation, so it finishes here.",
}
NO_SCRIPT = {
    "title": "Stop: no script matches this conversation",
    "summary": "No script's match text occurs in the first user message and there is no default.",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}


@dataclass(frozen=True)
class Flaky:
    """Each run takes a wrong fix with probability ``rate``, decided from ``seed``."""

    rate: float
    seed: int = 0


@dataclass(frozen=True)
class Script:
    """One scripted conversation: ``match`` selects it, ``default`` serves unmatched ones."""

    steps: list[dict[str, Any]]
    match: str | None = None
    default: bool = False
    name: str = "script"
    dialect: str | None = None  # None: the server's
    wrong: list[dict[str, Any]] | None = None  # a flaky run's steps (default: `wrong_steps`)
    flaky: Flaky | None = None  # None: the server's


@dataclass(frozen=True)
class Turn:
    """What the model says for one assistant message, and the faults that come first."""

    answer: Mapping[str, Any]
    error: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    trickle: float = 0.0  # seconds between the bytes of the answer
    pace: float = 0.0  # seconds between the chunks of a streamed answer


# ------------------------------------------------------------------------------------------------
# Loading scripts


def script_from_dict(data: Mapping[str, Any]) -> Script:
    steps = data.get("steps")
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        raise ValueError("a script needs 'steps': a list of objects")
    dialect = data.get("dialect")
    if dialect is not None and dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; known: {', '.join(DIALECTS)}")
    wrong = data.get("wrong")
    if wrong is not None and not (
        isinstance(wrong, list) and all(isinstance(step, dict) for step in wrong)
    ):
        raise ValueError("a script's 'wrong' must be a list of objects")
    flaky = data.get("flaky")
    return Script(
        steps=list(steps),
        match=data.get("match"),
        default=bool(data.get("default", False)),
        name=str(data.get("name", "script")),
        dialect=dialect,
        wrong=wrong,
        flaky=Flaky(float(flaky["rate"]), int(flaky.get("seed", 0))) if flaky else None,
    )


def scripts_with_dialects(data: Mapping[str, Any]) -> list[Script]:
    """The script, and one copy per dialect it lists, matched by `<match> [<dialect>]`."""
    base = script_from_dict(data)
    variants = [
        Script(
            steps=base.steps,
            match=f"{base.match} [{dialect}]",
            name=f"{base.name}-{dialect}",
            dialect=script_from_dict({"steps": [], "dialect": dialect}).dialect,
        )
        for dialect in data.get("dialects", ())
    ]
    if variants and not base.match:
        raise ValueError(f"script {base.name!r}: dialects need a match text")
    return [base, *variants]


def scripts_from_data(data: Any) -> list[Script]:
    """Accepts a list of scripts, ``{"scripts": [...]}``, or a single script object."""
    if isinstance(data, Script):
        return [data]
    if isinstance(data, Mapping) and "scripts" in data:
        data = data["scripts"]
    if isinstance(data, Mapping):
        return scripts_with_dialects(data)
    if isinstance(data, list):
        return [
            script
            for item in data
            for script in ([item] if isinstance(item, Script) else scripts_with_dialects(item))
        ]
    raise ValueError(f"cannot read scripts from {type(data).__name__}")


def load_scripts(path: str | Path) -> list[Script]:
    """Reads scripts from a .json, .yaml or .yml file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml  # only needed for YAML scripts

        return scripts_from_data(yaml.safe_load(text))
    return scripts_from_data(json.loads(text))


def turns_of(script: Script) -> list[Turn]:
    """Folds fault-only steps into the real step that follows them."""
    turns: list[Turn] = []
    pending: dict[str, Any] = {}
    for step in script.steps:
        unknown = set(step) - FAULT_KEYS - ANSWER_KEYS
        if unknown:
            raise ValueError(f"script {script.name!r}: unknown step keys {sorted(unknown)}")
        pending.update({key: step[key] for key in FAULT_KEYS & set(step)})
        answer = {key: step[key] for key in ANSWER_KEYS & set(step)}
        if not answer:
            continue
        turns.append(Turn(answer=answer, **_fault_fields(pending)))
        pending = {}
    if pending:  # faults at the very end apply to the out-of-script finish
        turns.append(Turn(answer=finish_step(OUT_OF_SCRIPT), **_fault_fields(pending)))
    return turns


_REPLACE_PART = re.compile(r"(<<<<<<< SEARCH\n)(.*?)(=======\n)(.*?)(>>>>>>> REPLACE)", re.S)


def wrong_steps(script: Script) -> list[dict[str, Any]]:
    """A flaky run's steps: the script's ``wrong`` ones, else its own with every
    SEARCH/REPLACE block of an `apply_patch` replacing the code by a comment and the same code."""
    if script.wrong is not None:
        return script.wrong

    def keep_the_bug(block: re.Match[str]) -> str:
        search = block.group(2)
        indent = search[: len(search) - len(search.lstrip(" \t"))]
        fixed = f"{indent}# attempted fix\n{search}"
        return f"{block.group(1)}{search}{block.group(3)}{fixed}{block.group(5)}"

    steps = []
    for step in script.steps:
        arguments = step.get("arguments")
        if step.get("tool") == "apply_patch" and isinstance(arguments, dict):
            patch = _REPLACE_PART.sub(keep_the_bug, str(arguments.get("patch", "")))
            step = {**step, "arguments": {**arguments, "patch": patch}}
        steps.append(step)
    return steps


def takes_wrong_fix(flaky: Flaky | None, script: str, run_seed: object) -> bool:
    """Whether this run of ``script`` (told apart by the request's ``seed``) goes wrong."""
    if flaky is None or flaky.rate <= 0:
        return False
    return random.Random(f"{flaky.seed}:{script}:{run_seed}").random() < flaky.rate  # noqa: S311


def _fault_fields(pending: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "error": pending.get("error"),
        "retry_after": pending.get("retry_after"),
        "delay": float(pending.get("delay", 0.0)),
        "trickle": float(pending.get("trickle", 0.0)),
        "pace": float(pending.get("pace", 0.0)),
    }


def finish_step(arguments: Mapping[str, str]) -> dict[str, Any]:
    return {"tool": "finish", "arguments": dict(arguments)}


# ------------------------------------------------------------------------------------------------
# Pure answer builders


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message whose content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def first_user_text(messages: list[Mapping[str, Any]]) -> str:
    return next((message_text(m) for m in messages if m.get("role") == "user"), "")


def choose_script(scripts: Iterable[Script], first_user: str) -> Script | None:
    """The first script whose match text is in the message, unless another matching script's
    text extends it (a dialect copy: `<match> [<dialect>]`); else the default."""
    scripts = list(scripts)
    matching = [s for s in scripts if s.match and s.match in first_user]
    texts = [script.match or "" for script in matching]
    for script, text in zip(matching, texts, strict=True):
        if not any(text in other and other != text for other in texts):
            return script
    return next((script for script in scripts if script.default), None)


def tool_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """Arguments given as a string are sent verbatim, so a script can send malformed JSON."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def answer_calls(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "tool" in answer:
        return [{"tool": answer["tool"], "arguments": answer.get("arguments", {})}]
    return list(answer.get("tool_calls", []))


def assistant_message(
    answer: Mapping[str, Any], call_prefix: str, dialect: str = "native"
) -> dict[str, Any]:
    """The assistant message for one step, spoken in ``dialect``."""
    calls = answer_calls(answer)
    if dialect == "no_title":
        calls = [without_title(call) for call in calls]
    content = answer.get("content")
    if dialect in TEXT_SHAPES and calls:
        parts = [content] if content else []
        parts += [TEXT_SHAPES[dialect](calls)]
        return {"role": "assistant", "content": "\n\n".join(parts)}
    tool_calls = [
        tool_call(f"{call_prefix}_{index}", call["tool"], call.get("arguments", {}))
        for index, call in enumerate(calls)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if dialect == "reasoning":
        thought = f"The user wants step {call_prefix.rsplit('_', 1)[-1]} done; let me think."
        message["reasoning_content"] = thought
        message["content"] = f"<think>\n{thought}\n</think>\n\n{content or ''}".rstrip()
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def without_title(call: Mapping[str, Any]) -> dict[str, Any]:
    arguments = call.get("arguments", {})
    if call.get("tool") == "finish" and isinstance(arguments, Mapping):
        arguments = {k: v for k, v in arguments.items() if k != "title"}
    return {**call, "arguments": arguments}


def _call_object(call: Mapping[str, Any]) -> dict[str, Any]:
    arguments = call.get("arguments", {})
    return {"name": call["tool"], "arguments": arguments}


def _hermes(calls: list[dict[str, Any]]) -> str:
    return "\n".join(f"<tool_call>\n{json.dumps(_call_object(c))}\n</tool_call>" for c in calls)


def _fenced_json(calls: list[dict[str, Any]]) -> str:
    return "\n\n".join(f"```json\n{json.dumps(_call_object(c), indent=2)}\n```" for c in calls)


def _mistral(calls: list[dict[str, Any]]) -> str:
    return "[TOOL_CALLS] " + json.dumps([_call_object(c) for c in calls])


def _text_protocol(calls: list[dict[str, Any]]) -> str:
    """What a model told to act through text writes: a bash block, or the finish marker."""
    parts = []
    for call in calls:
        arguments = call.get("arguments", {})
        if call["tool"] == "shell" and isinstance(arguments, Mapping):
            parts.append(f"```bash\n{arguments.get('command', '')}\n```")
        elif call["tool"] == "finish" and isinstance(arguments, Mapping):
            title = f"Title: {arguments['title']}\n" if arguments.get("title") else ""
            parts.append(f"{title}{arguments.get('summary', '')}\n\n{TEXT_MARKER}")
        else:
            parts.append(_fenced_json([call]))
    return "\n\n".join(parts)


TEXT_SHAPES = {
    "hermes": _hermes,
    "fenced_json": _fenced_json,
    "mistral": _mistral,
    "no_tools": _text_protocol,
}


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def completion_body(model: str, message: Mapping[str, Any], prompt_text: str) -> dict[str, Any]:
    completion_tokens = estimate_tokens(json.dumps(message))
    prompt_tokens = estimate_tokens(prompt_text)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": dict(message),
                "logprobs": None,
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def completion_chunks(completion: Mapping[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """The chunks a streaming server sends for a whole ``completion``, in order."""
    choice = completion["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": completion["model"],
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    for key in ("reasoning_content", "content"):
        chunks += [chunk({key: piece}) for piece in pieces(message.get(key) or "")]
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        opening = {"index": index, "id": call["id"], "type": "function"}
        chunks.append(chunk({"tool_calls": [{**opening, "function": {"name": function["name"]}}]}))
        chunks += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in pieces(function["arguments"])
        ]
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**chunk({}), "choices": [], "usage": completion["usage"]})
    return chunks


def pieces(text: str) -> list[str]:
    return [text[start : start + CHUNK_CHARS] for start in range(0, len(text), CHUNK_CHARS)]


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error"),
            "param": None,
            "code": code,
        }
    }


def conversation_key(script: Script, first_user: str) -> str:
    return hashlib.sha256(f"{script.name}\0{first_user}".encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# The server


@dataclass
class _Faults:
    """Errors already served, keyed by conversation and step, so each is served once."""

    served: set[tuple[str, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def first_time(self, key: tuple[str, int]) -> bool:
        with self.lock:
            if key in self.served:
                return False
            self.served.add(key)
            return True


class ScriptedModel:
    """A real OpenAI-protocol server on 127.0.0.1 (or ``host``) playing scripts.

    >>> with ScriptedModel([Script(steps=[{"content": "hi"}], default=True)]) as server:
    ...     server.base_url  # doctest: +ELLIPSIS
    'http://127.0.0.1:.../v1'
    """

    def __init__(
        self,
        scripts: list[Script] | Mapping[str, Any] | Script,
        api_key: str | None = None,
        *,
        models: Iterable[str] = DEFAULT_MODELS,
        host: str = "127.0.0.1",
        port: int = 0,
        dialect: str = "native",
        context_limit_chars: int = CONTEXT_LIMIT_CHARS,
        flaky: Flaky | None = None,
        streaming: str = "full",
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; known: {', '.join(DIALECTS)}")
        if streaming not in STREAMING:
            raise ValueError(f"unknown streaming {streaming!r}; known: {', '.join(STREAMING)}")
        self.streaming = streaming
        self.dialect = dialect
        self.context_limit_chars = context_limit_chars
        self.scripts = scripts_from_data(scripts)
        self._turns = {id(script): turns_of(script) for script in self.scripts}
        self.flaky = flaky
        self._wrong_turns = {
            id(script): turns_of(
                Script(steps=wrong_steps(script), name=f"{script.name}-wrong", dialect=None)
            )
            for script in self.scripts
        }
        self._api_key = api_key
        self.models = list(models)
        self._host = host
        self._port = port
        self._faults = _Faults()
        self._records_lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._streams: list[dict[str, Any]] = []
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> ScriptedModel:
        self._server = make_server(self._host, self._port, self.create_app(), threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="scripted-model", daemon=True
        )
        self._thread.start()
        log.info("scripted model listening", extra={"base_url": self.base_url})
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the scripted model is not running")
        return int(self._server.server_port)

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every chat completion request: ``{"path", "headers", "body", "time"}``, oldest first."""
        with self._records_lock:
            return list(self._records)

    @property
    def streams(self) -> list[dict[str, Any]]:
        """Every streamed answer: ``{"chunks", "sent", "done"}``; ``done`` is False while it is
        being sent, then True. ``sent < chunks`` once done: the client went away before the end."""
        with self._records_lock:
            return [dict(record) for record in self._streams]

    def chat_requests_for(self, match: str) -> list[dict[str, Any]]:
        """The recorded requests whose first user message contains ``match``."""
        return [r for r in self.requests if match in first_user_text(r["body"].get("messages", []))]

    # -- HTTP -------------------------------------------------------------------------------------

    def create_app(self) -> Flask:
        app = Flask(__name__)
        app.add_url_rule("/v1/chat/completions", view_func=self._chat, methods=["POST"])
        app.add_url_rule("/v1/models", view_func=self._list_models, methods=["GET"])
        app.add_url_rule("/_sim/requests", view_func=self._show_requests, methods=["GET"])
        return app

    def _unauthorized(self) -> Response | None:
        if self._api_key is None:
            return None
        if request.headers.get("Authorization", "") == f"Bearer {self._api_key}":
            return None
        body = error_body(401, "Incorrect API key provided.", code="invalid_api_key")
        return _json(body, 401)

    def _record(self, body: Any) -> None:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        record = {"path": request.path, "headers": headers, "body": body, "time": time.time()}
        with self._records_lock:
            self._records.append(record)

    def _list_models(self) -> Response:
        denied = self._unauthorized()
        if denied is not None:
            return denied
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "sim"} for m in self.models]
        return _json({"object": "list", "data": data}, 200)

    def _show_requests(self) -> Response:
        return _json(self.requests, 200)

    def _chat(self) -> Response:
        denied = self._unauthorized()
        if denied is not None:
            return denied
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _json(error_body(400, "body must be JSON with a 'messages' list"), 400)
        self._record(body)
        if body.get("stream") and self.streaming == "none":
            return _json(error_body(400, STREAM_REFUSAL), 400)
        if body.get("stream_options") is not None and self.streaming == "no_stream_options":
            return _json(error_body(400, STREAM_OPTIONS_REFUSAL), 400)
        messages = body["messages"]
        first_user = first_user_text(messages)
        script = choose_script(self.scripts, first_user)
        step = sum(1 for m in messages if m.get("role") == "assistant")
        model = str(body.get("model", self.models[0]))
        if script is None:
            turn = Turn(answer=finish_step(NO_SCRIPT))
            key = "unmatched"
        else:
            wrong = takes_wrong_fix(script.flaky or self.flaky, script.name, body.get("seed"))
            turns = (self._wrong_turns if wrong else self._turns)[id(script)]
            turn = turns[step] if step < len(turns) else Turn(answer=finish_step(OUT_OF_SCRIPT))
            key = conversation_key(script, first_user) + (":wrong" if wrong else "")
        dialect = (script.dialect if script else None) or self.dialect
        refused = self._refusal(dialect, body, key)
        if refused is not None:
            return refused
        return self._answer(turn, (key, step), model, body, dialect)

    def _refusal(self, dialect: str, body: Mapping[str, Any], key: str) -> Response | None:
        """The 400s of real servers: tools refused, a prompt over the context size (once)."""
        if dialect == "no_tools" and body.get("tools"):
            return _json(error_body(400, TOOLS_REFUSAL), 400)
        size = len(json.dumps(body["messages"])) - len(json.dumps(body["messages"][:2]))
        if (
            dialect == "context_limit"
            and size > self.context_limit_chars
            and self._faults.first_time((key, -1))
        ):
            return _json(error_body(400, CONTEXT_REFUSAL, code="exceed_context_size_error"), 400)
        return None

    def _answer(
        self,
        turn: Turn,
        fault_key: tuple[str, int],
        model: str,
        body: Mapping[str, Any],
        dialect: str = "native",
    ) -> Response:
        if turn.delay:
            time.sleep(turn.delay)  # bounded: the script's own number of seconds
        if turn.error is not None and self._faults.first_time(fault_key):
            response = _json(error_body(turn.error, f"scripted error {turn.error}"), turn.error)
            if turn.retry_after is not None:
                response.headers["Retry-After"] = str(turn.retry_after)
            return response
        call_prefix = f"call_{fault_key[0][:8]}_{fault_key[1]}"
        message = assistant_message(turn.answer, call_prefix, dialect)
        completion = completion_body(model, message, json.dumps(body["messages"]))
        if body.get("stream") and self.streaming != "ignored":
            options = body.get("stream_options") or {}
            chunks = completion_chunks(completion, bool(options.get("include_usage")))
            return self._streamed(chunks, turn)
        response = _json(completion, 200)
        if turn.trickle:
            return _trickled(response, turn.trickle)
        return response

    def _streamed(self, chunks: list[dict[str, Any]], turn: Turn) -> Response:
        """Server-sent events, recorded in ``streams`` as they go out."""
        record = {"chunks": len(chunks), "sent": 0, "done": False}
        with self._records_lock:
            self._streams.append(record)
        events = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks]
        events.append(b"data: [DONE]\n\n")
        connection = request.environ.get("werkzeug.socket")

        def send() -> Iterator[bytes]:
            try:
                for index, event in enumerate(events):
                    if index and turn.pace and client_gone(connection, turn.pace):
                        return
                    if not turn.trickle:
                        yield event
                    for byte in event if turn.trickle else b"":
                        yield bytes([byte])
                        time.sleep(turn.trickle)  # a stalled server that keeps the line alive
                    with self._records_lock:
                        record["sent"] = min(index + 1, len(chunks))
            finally:  # the client went away, or all was sent
                with self._records_lock:
                    record["done"] = True

        response = Response(send(), status=200, mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        return response


def client_gone(connection: socket.socket | None, seconds: float) -> bool:
    """Waits ``seconds`` (a model writing slowly), or less when the client hangs up: as
    llama.cpp's server does between tokens, it notices a closed connection without writing."""
    if connection is None:
        time.sleep(seconds)
        return False
    readable, _, _ = select.select([connection], [], [], seconds)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _trickled(response: Response, seconds: float) -> Response:
    """The same answer, one byte every `seconds`; ends when the client hangs up."""
    body = response.get_data()

    def one_byte_at_a_time() -> Iterator[bytes]:
        for index in range(len(body)):
            yield body[index : index + 1]
            time.sleep(seconds)  # the fault itself: a server that stalls between bytes

    trickled = Response(one_byte_at_a_time(), status=response.status_code)
    trickled.headers["Content-Type"] = response.headers["Content-Type"]
    trickled.headers["Content-Length"] = str(len(body))
    return trickled


def _json(body: Any, status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


# ------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sim.model", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument(
        "--script", action="append", required=True, help="JSON/YAML script file (repeatable)"
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"key clients must send; prefer the {API_KEY_ENV} environment variable",
    )
    parser.add_argument("--model", action="append", help="model name to list (repeatable)")
    parser.add_argument("--dialect", choices=sorted(DIALECTS), default="native")
    parser.add_argument(
        "--flaky", type=float, default=0.0, help="probability that a run takes a wrong fix"
    )
    parser.add_argument("--flaky-seed", type=int, default=0)
    parser.add_argument("--streaming", choices=STREAMING, default="full")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    scripts = [script for path in args.script for script in load_scripts(path)]
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    server = ScriptedModel(
        scripts,
        api_key=api_key,
        models=args.model or DEFAULT_MODELS,
        port=args.port,
        dialect=args.dialect,
        flaky=Flaky(args.flaky, args.flaky_seed) if args.flaky else None,
        streaming=args.streaming,
    )
    server.start()
    log.info("serving %d script(s) at %s", len(scripts), server.base_url)
    try:
        threading.Event().wait()  # until interrupted
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
