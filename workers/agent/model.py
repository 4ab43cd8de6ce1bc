"""The model side of the agent: the protocol the loop needs, and an OpenAI SDK implementation."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import openai


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


class Model(Protocol):
    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        seconds: float | None = None,
    ) -> ModelReply:
        """The model's next reply; ModelTimeout when it takes longer than ``seconds`` in all."""
        ...


class ModelError(Exception):
    """The model API cannot answer: bad key, unknown model, or still failing after retries."""


class ModelTimeout(ModelError):
    """The model took longer than the time the run had left, retries and slow bytes included."""


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
    history: dict[str, Any] = {"role": "assistant", "content": message.content}
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
    )


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
    ) -> None:
        self.model = model
        self._timeout = timeout
        self._options = {
            "base_url": base_url,
            "api_key": api_key,
            "timeout": timeout,
            "max_retries": max_retries,
        }
        self._client = openai.OpenAI(**self._options)  # type: ignore[arg-type]

    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        seconds: float | None = None,
    ) -> ModelReply:
        if seconds is None:
            return self._create(self._client, messages, tools, self._timeout)
        client = self._client
        outcome: list[ModelReply | Exception] = []

        def call() -> None:
            try:
                outcome.append(self._create(client, messages, tools, min(self._timeout, seconds)))
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
    ) -> ModelReply:
        try:
            completion = client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                tools=tools,  # type: ignore[arg-type]
                timeout=timeout,
            )
        except openai.OpenAIError as error:
            raise ModelError(describe_api_error(error)) from None
        return reply_from_completion(completion)

    def close(self) -> None:
        self._client.close()
