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
byte every that many seconds, like a stalled server that keeps the connection alive). A step
holding only fault keys applies to the next real step.

    python -m sim.model --port 8600 --script sim/scripts/demo_fix.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
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
FAULT_KEYS = frozenset({"error", "retry_after", "delay", "trickle"})
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
class Script:
    """One scripted conversation: ``match`` selects it, ``default`` serves unmatched ones."""

    steps: list[dict[str, Any]]
    match: str | None = None
    default: bool = False
    name: str = "script"


@dataclass(frozen=True)
class Turn:
    """What the model says for one assistant message, and the faults that come first."""

    answer: Mapping[str, Any]
    error: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    trickle: float = 0.0  # seconds between the bytes of the answer


# ------------------------------------------------------------------------------------------------
# Loading scripts


def script_from_dict(data: Mapping[str, Any]) -> Script:
    steps = data.get("steps")
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        raise ValueError("a script needs 'steps': a list of objects")
    return Script(
        steps=list(steps),
        match=data.get("match"),
        default=bool(data.get("default", False)),
        name=str(data.get("name", "script")),
    )


def scripts_from_data(data: Any) -> list[Script]:
    """Accepts a list of scripts, ``{"scripts": [...]}``, or a single script object."""
    if isinstance(data, Script):
        return [data]
    if isinstance(data, Mapping) and "scripts" in data:
        data = data["scripts"]
    if isinstance(data, Mapping):
        return [script_from_dict(data)]
    if isinstance(data, list):
        return [item if isinstance(item, Script) else script_from_dict(item) for item in data]
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


def _fault_fields(pending: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "error": pending.get("error"),
        "retry_after": pending.get("retry_after"),
        "delay": float(pending.get("delay", 0.0)),
        "trickle": float(pending.get("trickle", 0.0)),
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
    scripts = list(scripts)
    for script in scripts:
        if script.match and script.match in first_user:
            return script
    return next((script for script in scripts if script.default), None)


def tool_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    """Arguments given as a string are sent verbatim, so a script can send malformed JSON."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def assistant_message(answer: Mapping[str, Any], call_prefix: str) -> dict[str, Any]:
    if "tool" in answer:
        calls = [{"tool": answer["tool"], "arguments": answer.get("arguments", {})}]
    else:
        calls = list(answer.get("tool_calls", []))
    tool_calls = [
        tool_call(f"{call_prefix}_{index}", call["tool"], call.get("arguments", {}))
        for index, call in enumerate(calls)
    ]
    message: dict[str, Any] = {"role": "assistant", "content": answer.get("content")}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


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
    """A real OpenAI-protocol server on 127.0.0.1 playing scripts.

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
        port: int = 0,
    ) -> None:
        self.scripts = scripts_from_data(scripts)
        self._turns = {id(script): turns_of(script) for script in self.scripts}
        self._api_key = api_key
        self.models = list(models)
        self._port = port
        self._faults = _Faults()
        self._records_lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> ScriptedModel:
        self._server = make_server("127.0.0.1", self._port, self.create_app(), threaded=True)
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
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every chat completion request: ``{"path", "headers", "body", "time"}``, oldest first."""
        with self._records_lock:
            return list(self._records)

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
        if body.get("stream"):
            return _json(
                error_body(400, "the scripted model does not stream; send stream=false"), 400
            )
        messages = body["messages"]
        first_user = first_user_text(messages)
        script = choose_script(self.scripts, first_user)
        step = sum(1 for m in messages if m.get("role") == "assistant")
        model = str(body.get("model", self.models[0]))
        if script is None:
            turn = Turn(answer=finish_step(NO_SCRIPT))
            key = "unmatched"
        else:
            turns = self._turns[id(script)]
            turn = turns[step] if step < len(turns) else Turn(answer=finish_step(OUT_OF_SCRIPT))
            key = conversation_key(script, first_user)
        return self._answer(turn, (key, step), model, messages)

    def _answer(
        self, turn: Turn, fault_key: tuple[str, int], model: str, messages: list[Any]
    ) -> Response:
        if turn.delay:
            time.sleep(turn.delay)  # bounded: the script's own number of seconds
        if turn.error is not None and self._faults.first_time(fault_key):
            response = _json(error_body(turn.error, f"scripted error {turn.error}"), turn.error)
            if turn.retry_after is not None:
                response.headers["Retry-After"] = str(turn.retry_after)
            return response
        message = assistant_message(turn.answer, f"call_{fault_key[0][:8]}_{fault_key[1]}")
        response = _json(completion_body(model, message, json.dumps(messages)), 200)
        if turn.trickle:
            return _trickled(response, turn.trickle)
        return response


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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    scripts = [script for path in args.script for script in load_scripts(path)]
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    server = ScriptedModel(
        scripts, api_key=api_key, models=args.model or DEFAULT_MODELS, port=args.port
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
