"""The model side of the agent: the protocol the loop needs, and an OpenAI SDK implementation."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx2
import openai
from openai.types.chat import ChatCompletion

from workers.agent import clients

THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)\s*", re.DOTALL)
# How servers say the prompt is too long: OpenAI's code, vLLM's and llama.cpp's wording.
CONTEXT_LENGTH = re.compile(
    r"context_length_exceeded|maximum context length|exceeds the available context size|"
    r"context length|too many tokens|prompt is too long",
    re.IGNORECASE,
)
NEWER_LIMIT = "max_completion_tokens"
TOOLS_REFUSED = re.compile(r"\btools?\b|tool[_ ]choice|function calling", re.IGNORECASE)
# How servers refuse `stream_options` (older ones, Azure's older API versions), or streaming.
STREAM_OPTIONS_REFUSED = re.compile(r"stream_options|include_usage", re.IGNORECASE)
STREAM_REFUSED = re.compile(r"\bstream", re.IGNORECASE)
StreamMode = Literal["auto", "on", "off"]
# Given the reply's text so far, where a complete tool call written in it ends, or None.
CallEnd = Callable[[str], "int | None"]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False  # the server sent none (a stream cut short): counted from the text


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text, parsed (and checked) by the loop


@dataclass(frozen=True)
class ModelReply:
    message: dict[str, Any]  # the assistant message, as it goes back into the history
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = Usage()
    reasoning: str = ""  # `reasoning_content` and `<think>` blocks: recorded, never sent back
    stopped_at_call: bool = False  # streamed, and closed once its text held a complete call
    cut_tail: str = ""  # the text received after the cut (recorded, never sent back)


class Model(Protocol):
    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        seconds: float | None = None,
        max_tokens: int | None = None,
        call_end: CallEnd | None = None,
    ) -> ModelReply:
        """The model's next reply; ModelTimeout when it takes longer than ``seconds`` in all.
        No ``tools`` means none are sent (the text protocol). ``call_end``: a streamed reply
        whose text holds a complete tool call is cut where it ends, and the generation stopped."""
        ...


class ModelError(Exception):
    """The model API cannot answer: bad key, unknown model, or still failing after retries."""


class ModelTimeout(ModelError):
    """The model took longer than the time the run had left, retries and slow bytes included."""


class ContextTooLong(ModelError):
    """The server refused the prompt as longer than its context window."""


class ToolsUnsupported(ModelError):
    """The server refused the request because it carried tools: it has no tool support."""


# Sees each call: its seconds, the usage it reported (None: it failed) and its error's kind.
CallObserver = Callable[[float, Usage | None, str | None], None]


def error_kind(error: ModelError) -> str:
    """A short name for what went wrong, for metrics: one of a few, never the message."""
    if isinstance(error, ModelTimeout):
        return "timeout"
    if isinstance(error, ContextTooLong):
        return "context_too_long"
    if isinstance(error, ToolsUnsupported):
        return "tools_unsupported"
    return "api"


def split_reasoning(content: str | None) -> tuple[str | None, str]:
    """The content without `<think>` blocks, and the blocks' text. A reply whose template
    opened the block itself starts inside it and shows only the closing tag."""
    if not content:
        return content, ""
    thoughts: list[str] = []
    if "</think>" in content and "<think>" not in content.split("</think>", 1)[0]:
        inside, content = content.split("</think>", 1)
        thoughts.append(inside.strip())
        content = content.lstrip()

    def keep(match: re.Match[str]) -> str:
        thoughts.append(match.group(1).strip())
        return ""

    return THINK.sub(keep, content), "\n\n".join(t for t in thoughts if t)


def reply_from_completion(completion: Any) -> ModelReply:
    """Converts an SDK ChatCompletion into the loop's plain-data reply."""
    if not completion.choices:
        raise ModelError("the model API answered with no choices")
    message = completion.choices[0].message
    calls = [
        ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments or "")
        for call in (message.tool_calls or [])
        if getattr(call, "function", None) is not None
    ]
    usage = completion.usage
    return assemble_reply(
        message.content,
        getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None),
        calls,
        Usage(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        ),
    )


def assemble_reply(
    content: str | None, reasoning: Any, calls: list[ToolCall], usage: Usage
) -> ModelReply:
    """The loop's reply from the parts of a message, whole or streamed: `<think>` blocks and
    the reasoning field go to ``reasoning``, never back into the history."""
    content, thoughts = split_reasoning(content)
    reasoning = "\n\n".join(
        part for part in (reasoning, thoughts) if isinstance(part, str) and part
    )
    history: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        history["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ]
    return ModelReply(message=history, tool_calls=calls, usage=usage, reasoning=reasoning)


class StreamedReply:
    """A reply put together from streamed chunks: content, reasoning and tool-call deltas (a
    call's id and name come first, its arguments in pieces, each chunk naming the call by index),
    and the usage chunk the server sends last when asked to."""

    def __init__(self) -> None:
        self.content = ""
        self.reasoning = ""
        self.calls: dict[int, dict[str, str]] = {}
        self.usage: Usage | None = None
        self.cut = False
        self.cut_tail = ""  # what came after the call the reply was cut at

    def add(self, chunk: Any) -> None:
        if getattr(chunk, "usage", None) is not None:
            self.usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
        for choice in getattr(chunk, "choices", None) or []:
            delta = getattr(choice, "delta", None)
            if getattr(choice, "index", 0) not in (0, None) or delta is None:
                continue
            self.content += delta.content or ""
            thought = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
            self.reasoning += thought if isinstance(thought, str) else ""
            for call in delta.tool_calls or []:
                index = getattr(call, "index", None)
                if index is None:  # a server that numbers no calls: an id starts the next one
                    index = len(self.calls) if call.id or not self.calls else max(self.calls)
                slot = self.calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = slot["id"] or call.id or ""
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""

    def cut_at_call(self, call_end: CallEnd) -> bool:
        """Whether the text holds a complete tool call; if so it is cut where the call ends.
        Only a reply without tool-call deltas: those the server parses itself."""
        if self.calls:
            return False
        shown, thoughts = split_reasoning(self.content)
        end = call_end(shown or "")
        if end is None:
            return False
        self.content, self.cut_tail, self.cut = (shown or "")[:end], (shown or "")[end:], True
        self.reasoning = "\n\n".join(part for part in (self.reasoning, thoughts) if part)
        return True

    def reply(self, messages: list[dict[str, Any]]) -> ModelReply:
        calls = [
            ToolCall(slot["id"] or f"call_{index}", slot["name"], slot["arguments"])
            for index, slot in sorted(self.calls.items())
        ]
        usage = self.usage
        if usage is None:  # not asked for, refused, or the stream was closed before it came
            # All the text received, the tail after a cut too: the server generated it.
            written = (
                self.content + self.cut_tail + self.reasoning + "".join(c.arguments for c in calls)
            )
            usage = Usage(
                prompt_tokens=len(json.dumps(messages, ensure_ascii=False)) // 4,
                completion_tokens=len(written) // 4,
                estimated=True,
            )
        reply = assemble_reply(self.content, self.reasoning, calls, usage)
        return dataclasses.replace(reply, stopped_at_call=self.cut, cut_tail=self.cut_tail)


def refusal_of(error: openai.OpenAIError) -> ModelError | None:
    """A 400 the loop can act on: a prompt too long (compact and retry), or tools refused
    (switch to the text protocol)."""
    if not isinstance(error, openai.BadRequestError | openai.UnprocessableEntityError):
        return None
    said = f"{getattr(error, 'code', '') or ''} {error.message}"
    if CONTEXT_LENGTH.search(said):
        return ContextTooLong(f"the model API refused the prompt as too long: {said.strip()[:200]}")
    if TOOLS_REFUSED.search(said):
        return ToolsUnsupported(f"the model API refused tool calling: {said.strip()[:200]}")
    return None


def describe_api_error(error: openai.OpenAIError) -> str:
    """A short, key-free description a human can act on."""
    if isinstance(error, openai.AuthenticationError):
        return "model API rejected the API key (401); check OPENAI_API_KEY"
    if isinstance(error, openai.PermissionDeniedError):
        return "model API denied access (403); check the key's project and model permissions"
    if isinstance(error, openai.NotFoundError):
        return "model API returned 404; check the base URL and the model name"
    if isinstance(error, openai.RateLimitError):
        return "model API is still rate limiting (429) after retries"
    if isinstance(error, openai.APITimeoutError):
        return "model API did not answer before the timeout"
    if isinstance(error, openai.APIConnectionError):
        return "cannot connect to the model API; check the base URL"
    if isinstance(error, openai.APIStatusError):
        return f"model API failed with HTTP {error.status_code}"
    return f"model API call failed: {type(error).__name__}"


class OpenAIModel:
    """Chat completions through the openai SDK.

    The SDK retries 408/409/429/5xx and connection errors ``max_retries`` times with backoff,
    honouring Retry-After; 401/403/404 fail at once. Every failure surfaces as ModelError.

    The SDK's timeout bounds each read, and a server that sends a byte now and then restarts it
    every time. ``seconds`` bounds the whole call: it runs in a thread of its own, and when the
    time is up its connection is shut down (which ends the thread, and the server sees the client
    go away) and the next call gets a fresh one.

    ``stream``: replies come as server-sent events (``on``; ``auto`` too, until the server refuses
    streaming; ``off`` never), with the usage chunk asked for until the server refuses
    ``stream_options``. A streamed reply can be stopped: at the deadline, and as soon as its text
    holds a complete tool call (``call_end``), so a slow model does not write on for nobody.
    """

    def __init__(
        self,
        base_url: str | None,
        api_key: str,
        model: str,
        timeout: float = clients.DEFAULT_TIMEOUT,
        max_retries: int = clients.DEFAULT_RETRIES,
        observe: CallObserver | None = None,
        seed: int | None = None,
        stream: StreamMode = "auto",
    ) -> None:
        self.model = model
        self._observe = observe
        self.seed = seed  # sent as the API's `seed`: tries of one task sample apart
        self._timeout = timeout
        self._options = clients.options(base_url, api_key, timeout, max_retries)
        self._client = clients.take(self._options)
        self._newer_limit = False  # send NEWER_LIMIT instead of `max_tokens` (OpenAI's o-series)
        self._stream_mode = stream
        self._streaming = stream != "off"
        self._usage_option = True  # ask for the usage chunk (`stream_options`)

    @property
    def endpoint(self) -> tuple[str, str]:
        """What a learned protocol is remembered by: the server and the model on it."""
        return (str(self._options["base_url"] or ""), self.model)

    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        seconds: float | None = None,
        max_tokens: int | None = None,
        call_end: CallEnd | None = None,
    ) -> ModelReply:
        started = time.monotonic()
        try:
            reply = self._complete(messages, tools, seconds, max_tokens, call_end)
        except ModelError as error:
            if self._observe is not None:
                self._observe(time.monotonic() - started, None, error_kind(error))
            raise
        if self._observe is not None:
            self._observe(time.monotonic() - started, reply.usage, None)
        return reply

    def _complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        seconds: float | None,
        max_tokens: int | None,
        call_end: CallEnd | None,
    ) -> ModelReply:
        if seconds is None:
            return self._create(self._client, messages, tools, self._timeout, max_tokens, call_end)
        client = self._client
        outcome: list[ModelReply | Exception] = []
        open_streams: list[Any] = []

        def call() -> None:
            try:
                # The whole call may take what the run gives it: a slow model that writes a long
                # reply is not cut off by a fixed read timeout while the server still works.
                reply = self._create(
                    client, messages, tools, seconds, max_tokens, call_end, open_streams
                )
                outcome.append(reply)
            except Exception as error:  # noqa: BLE001 - raised again by the caller's thread
                outcome.append(error)

        worker = threading.Thread(target=call, name="model-call", daemon=True)
        worker.start()
        worker.join(max(seconds, 0.0))
        if not outcome:
            self._client = clients.take(self._options)
            for stream in open_streams:
                hang_up(stream)  # the server sees the client go away and stops generating
            client.close()  # ends an abandoned call that is not streaming at its next read
            raise ModelTimeout(f"the model did not answer within {seconds:.0f} s")
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def _create(
        self,
        client: openai.OpenAI,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        timeout: float,
        max_tokens: int | None,
        call_end: CallEnd | None = None,
        open_streams: list[Any] | None = None,
    ) -> ModelReply:
        request = {
            "model": self.model,
            "messages": messages,
            "tools": tools or openai.omit,
            "seed": self.seed if self.seed is not None else openai.omit,
            "timeout": max(timeout, 0.001),
        }
        while True:
            newer, streaming, usage_option = (
                self._newer_limit,
                self._streaming,
                self._usage_option,
            )
            limit = {
                "max_tokens": max_tokens if max_tokens and not newer else openai.omit,
                "max_completion_tokens": max_tokens if max_tokens and newer else openai.omit,
            }
            try:
                if not streaming:
                    return reply_from_completion(
                        client.chat.completions.create(**request, **limit)  # type: ignore[call-overload]
                    )
                stream = client.chat.completions.create(  # type: ignore[call-overload]
                    **request,
                    **limit,
                    stream=True,
                    stream_options={"include_usage": True} if usage_option else openai.omit,
                )
                if open_streams is not None:
                    open_streams.append(stream)
                return read_stream(stream, messages, call_end)
            except openai.BadRequestError as error:
                self._learn(error, bool(max_tokens))
                if (newer, streaming, usage_option) == (
                    self._newer_limit,
                    self._streaming,
                    self._usage_option,
                ):
                    raise (refusal_of(error) or ModelError(describe_api_error(error))) from None
            except openai.OpenAIError as error:
                raise (refusal_of(error) or ModelError(describe_api_error(error))) from None
            except httpx2.HTTPError as error:  # the connection went while a stream was read
                raise ModelError(
                    f"the model API's stream broke off: {type(error).__name__}"
                ) from None

    def _learn(self, error: openai.BadRequestError, limited: bool) -> None:
        """What a 400 says to change before asking again, if anything: OpenAI's reasoning models
        take only `max_completion_tokens`; some servers refuse `stream_options`, or streaming."""
        if limited and not self._newer_limit and NEWER_LIMIT in error.message:
            self._newer_limit = True
        elif (
            self._streaming and self._usage_option and STREAM_OPTIONS_REFUSED.search(error.message)
        ):
            self._usage_option = False
        elif (
            self._streaming and self._stream_mode == "auto" and STREAM_REFUSED.search(error.message)
        ):
            self._streaming = False

    def close(self) -> None:
        clients.give_back(self._options, self._client)


def read_stream(
    stream: Any, messages: list[dict[str, Any]], call_end: CallEnd | None
) -> ModelReply:
    """The reply a stream of chunks holds. Leaving the block closes the HTTP response, early too:
    the server sees the client go away and stops generating."""
    assembled = StreamedReply()
    with stream:
        if stream.response.headers.get("content-type", "").startswith("application/json"):
            return whole_reply(stream.response)  # a server that does not stream answers whole
        for chunk in stream:
            assembled.add(chunk)
            if call_end is not None and assembled.cut_at_call(call_end):
                break
    return assembled.reply(messages)


def whole_reply(response: httpx2.Response) -> ModelReply:
    try:
        completion = ChatCompletion.model_validate(json.loads(response.read()))
    except ValueError as error:  # not JSON, or not a completion (pydantic's errors are ValueErrors)
        raise ModelError(
            f"the model API answered a stream with a body it cannot read ({type(error).__name__})"
        ) from None
    return reply_from_completion(completion)


def hang_up(stream: Any) -> None:
    """Shuts a stream's connection down from another thread: the read blocked on it returns at
    once, and the server's next write fails. (Closing the socket alone would wait for that read.)"""
    network = getattr(stream, "response", None) and stream.response.extensions.get("network_stream")
    sock = network.get_extra_info("socket") if network is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


# Endpoints that refused tools, learned in this process: later runs start with the text protocol.
_TEXT_ONLY: set[tuple[str, str]] = set()


def remember_text_only(model: Model) -> None:
    endpoint = getattr(model, "endpoint", None)
    if endpoint is not None:
        _TEXT_ONLY.add(endpoint)


def known_text_only(model: Model) -> bool:
    return getattr(model, "endpoint", None) in _TEXT_ONLY
