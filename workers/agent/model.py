"""The model side of the agent: the protocol the loop needs, and an OpenAI SDK implementation."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai

THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)\s*", re.DOTALL)
# How servers say the prompt is too long: OpenAI's code, vLLM's and llama.cpp's wording.
CONTEXT_LENGTH = re.compile(
    r"context_length_exceeded|maximum context length|exceeds the available context size|"
    r"context length|too many tokens|prompt is too long",
    re.IGNORECASE,
)
NEWER_LIMIT = "max_completion_tokens"
TOOLS_REFUSED = re.compile(r"\btools?\b|tool[_ ]choice|function calling", re.IGNORECASE)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


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


class Model(Protocol):
    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        seconds: float | None = None,
        max_tokens: int | None = None,
    ) -> ModelReply:
        """The model's next reply; ModelTimeout when it takes longer than ``seconds`` in all.
        No ``tools`` means none are sent (the text protocol)."""
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
    content, thoughts = split_reasoning(message.content)
    reasoning = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
    reasoning = "\n\n".join(
        part for part in (reasoning, thoughts) if isinstance(part, str) and part
    )
    calls = [
        ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments or "")
        for call in (message.tool_calls or [])
        if getattr(call, "function", None) is not None
    ]
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
    usage = completion.usage
    return ModelReply(
        message=history,
        tool_calls=calls,
        usage=Usage(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        ),
        reasoning=reasoning,
    )


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
    time is up its connection is closed (which ends the thread) and the next call gets a fresh one.
    """

    def __init__(
        self,
        base_url: str | None,
        api_key: str,
        model: str,
        timeout: float = 120.0,
        max_retries: int = 3,
        observe: CallObserver | None = None,
        seed: int | None = None,
    ) -> None:
        self.model = model
        self._observe = observe
        self.seed = seed  # sent as the API's `seed`: tries of one task sample apart
        self._timeout = timeout
        self._options = {
            "base_url": base_url,
            "api_key": api_key,
            "timeout": timeout,
            "max_retries": max_retries,
        }
        self._client = openai.OpenAI(**self._options)  # type: ignore[arg-type]
        self._newer_limit = False  # send NEWER_LIMIT instead of `max_tokens` (OpenAI's o-series)

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
    ) -> ModelReply:
        started = time.monotonic()
        try:
            reply = self._complete(messages, tools, seconds, max_tokens)
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
    ) -> ModelReply:
        if seconds is None:
            return self._create(self._client, messages, tools, self._timeout, max_tokens)
        client = self._client
        outcome: list[ModelReply | Exception] = []

        def call() -> None:
            try:
                # The whole call may take what the run gives it: a slow model that writes a long
                # reply is not cut off by a fixed read timeout while the server still works.
                outcome.append(self._create(client, messages, tools, seconds, max_tokens))
            except Exception as error:  # noqa: BLE001 - raised again by the caller's thread
                outcome.append(error)

        worker = threading.Thread(target=call, name="model-call", daemon=True)
        worker.start()
        worker.join(max(seconds, 0.0))
        if not outcome:
            self._client = openai.OpenAI(**self._options)  # type: ignore[arg-type]
            client.close()  # ends the abandoned call at its next read
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
    ) -> ModelReply:
        newer = self._newer_limit
        try:
            completion = client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                tools=tools or openai.omit,  # type: ignore[arg-type]
                max_tokens=max_tokens if max_tokens and not newer else openai.omit,
                max_completion_tokens=max_tokens if max_tokens and newer else openai.omit,
                seed=self.seed if self.seed is not None else openai.omit,
                timeout=max(timeout, 0.001),
            )
        except openai.BadRequestError as error:
            # OpenAI's reasoning models take only `max_completion_tokens`; ask again with it.
            if max_tokens and not newer and NEWER_LIMIT in error.message:
                self._newer_limit = True
                return self._create(client, messages, tools, timeout, max_tokens)
            raise (refusal_of(error) or ModelError(describe_api_error(error))) from None
        except openai.OpenAIError as error:
            raise (refusal_of(error) or ModelError(describe_api_error(error))) from None
        return reply_from_completion(completion)

    def close(self) -> None:
        self._client.close()


# Endpoints that refused tools, learned in this process: later runs start with the text protocol.
_TEXT_ONLY: set[tuple[str, str]] = set()


def remember_text_only(model: Model) -> None:
    endpoint = getattr(model, "endpoint", None)
    if endpoint is not None:
        _TEXT_ONLY.add(endpoint)


def known_text_only(model: Model) -> bool:
    return getattr(model, "endpoint", None) in _TEXT_ONLY
