"""Streamed completions through the real SDK and a real HTTP server: the same reply as a whole
one, a stream closed once its text holds a complete call or when the time is up (the server sees
the client go away), and servers that refuse `stream_options` or streaming."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from sim.model import Script, ScriptedModel, completion_chunks
from sim.stack import wait_until
from workers.agent.callend import call_end
from workers.agent.model import ModelError, ModelTimeout, OpenAIModel, StreamMode, Usage

TOOLS = ("shell", "finish")
CALL = {"name": "shell", "arguments": {"command": "python -m pytest -q tests/test_calc.py"}}
TWO_CALLS = (
    f"<tool_call>\n{json.dumps(CALL)}\n</tool_call>\nThen I will read the file.\n"
    '<tool_call>\n{"name": "shell", "arguments": {"command": "cat calc.py"}}\n</tool_call>'
)
RUN_ON = "Then I will look at the output and decide what to do next. " * 60
STEPS: list[dict[str, Any]] = [
    {
        "content": "Two commands.",
        "tool_calls": [
            {"tool": "shell", "arguments": {"command": "ls -la && cat README.md"}},
            {"tool": "finish", "arguments": {"title": "Fix add", "summary": "Swapped operands."}},
        ],
    },
]
SCRIPTS = [
    Script(name=f"same-{dialect}", match=f"same [{dialect}]", steps=STEPS, dialect=dialect)
    for dialect in ("native", "hermes", "fenced_json", "mistral", "reasoning")
] + [
    # A slow local model: one call written as text, then it writes on (and would call again).
    Script(
        name="run-on",
        match="run on",
        steps=[
            {"pace": 0.01, "content": f"<tool_call>\n{json.dumps(CALL)}\n</tool_call>\n{RUN_ON}"}
        ],
    ),
    # Two calls written as text with a line between them: both are read, none cut off.
    Script(
        name="two-calls",
        match="two text calls",
        steps=[{"pace": 0.01, "content": TWO_CALLS}],
    ),
    Script(name="slow", match="slow model", steps=[{"pace": 0.05, "content": RUN_ON}]),
    # A model that writes a chunk every two seconds (a big model on a small machine).
    Script(name="crawl", match="crawling model", steps=[{"pace": 2, "content": RUN_ON}]),
]


def conversation(title: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "sys"}, {"role": "user", "content": f"Fix {title}"}]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModel]:
    with ScriptedModel(SCRIPTS) as running:
        yield running


def model(server: ScriptedModel, stream: StreamMode) -> OpenAIModel:
    return OpenAIModel(server.base_url, "sk-test", "scripted-model", max_retries=0, stream=stream)


@pytest.mark.parametrize("dialect", ["native", "hermes", "fenced_json", "mistral", "reasoning"])
def test_a_streamed_reply_equals_the_whole_reply(server: ScriptedModel, dialect: str) -> None:
    messages = conversation(f"same [{dialect}]")
    whole = model(server, "off").complete(messages, [], seconds=30)
    streamed = model(server, "on").complete(messages, [], seconds=30)
    assert streamed == whole
    assert streamed.message["content"] or streamed.tool_calls
    assert not streamed.usage.estimated and streamed.usage.completion_tokens > 0
    assert server.requests[-1]["body"]["stream_options"] == {"include_usage": True}


def test_tool_call_arguments_arrive_in_pieces_and_are_put_together(server: ScriptedModel) -> None:
    streamed = model(server, "on").complete(conversation("same [native]"), [], seconds=30)
    assert [call.name for call in streamed.tool_calls] == ["shell", "finish"]
    assert json.loads(streamed.tool_calls[0].arguments) == {"command": "ls -la && cat README.md"}
    # What the server sent: each call's arguments split over several chunks.
    completion = {
        "id": "c",
        "created": 0,
        "model": "m",
        "usage": {},
        "choices": [{"finish_reason": "tool_calls", "message": streamed.message}],
    }
    pieces = [
        delta["tool_calls"][0]
        for chunk in completion_chunks(completion, include_usage=False)
        if "tool_calls" in (delta := chunk["choices"][0]["delta"])
    ]
    assert sum(1 for piece in pieces if piece["index"] == 0 and "id" not in piece) > 3


def test_a_complete_text_call_closes_the_stream_and_the_server_stops(
    server: ScriptedModel,
) -> None:
    reply = model(server, "on").complete(
        conversation("run on"),
        [],
        seconds=60,
        call_end=functools.partial(call_end, tools=TOOLS),
    )
    assert reply.stopped_at_call
    assert reply.message["content"] == f"<tool_call>\n{json.dumps(CALL)}\n</tool_call>"
    assert reply.usage.estimated and reply.usage.completion_tokens > 0
    # What came after the cut is kept apart, and counted: the server generated it.
    assert reply.cut_tail.lstrip().startswith("Then I will look at the output")
    written = reply.message["content"] + reply.cut_tail
    assert reply.usage.completion_tokens == len(written) // 4
    stream = wait_until(lambda: server.streams[-1]["done"] and server.streams[-1], 30, "hang-up")
    # The server noticed the client leave a few chunks after the call: it wrote no more.
    assert stream["sent"] < stream["chunks"] // 2, stream


def test_several_text_calls_in_one_streamed_reply_are_all_read(server: ScriptedModel) -> None:
    reply = model(server, "on").complete(
        conversation("two text calls"),
        [],
        seconds=60,
        call_end=functools.partial(call_end, tools=TOOLS),
    )
    assert not reply.stopped_at_call
    assert reply.message["content"] == TWO_CALLS
    assert server.streams[-1]["sent"] == server.streams[-1]["chunks"]


def test_a_reply_without_a_complete_call_is_read_to_the_end(server: ScriptedModel) -> None:
    reply = model(server, "on").complete(
        conversation("same [native]"),
        [],
        seconds=30,
        call_end=functools.partial(call_end, tools=TOOLS),
    )
    assert not reply.stopped_at_call and len(reply.tool_calls) == 2
    assert server.streams[-1]["sent"] == server.streams[-1]["chunks"]


def test_the_deadline_closes_a_stream_mid_way(server: ScriptedModel) -> None:
    with pytest.raises(ModelTimeout):
        model(server, "on").complete(conversation("slow model"), [], seconds=1)
    stream = wait_until(lambda: server.streams[-1]["done"] and server.streams[-1], 30, "hang-up")
    assert 0 < stream["sent"] < stream["chunks"], stream


def test_the_deadline_hangs_up_at_once_not_at_the_next_chunk(server: ScriptedModel) -> None:
    """Chunks at 0, 2 and 4 s, the deadline at 3 s. The connection is shut down then, and the
    server, waiting to write its third chunk, sees the client gone. (Closing the socket under
    the read waiting on it would let that read take the third chunk before the line drops.)"""
    with pytest.raises(ModelTimeout):
        model(server, "on").complete(conversation("crawling model"), [], seconds=3)
    stream = wait_until(lambda: server.streams[-1]["done"] and server.streams[-1], 20, "hang-up")
    assert stream["sent"] == 2, stream


def test_a_server_that_refuses_stream_options_streams_without_them() -> None:
    with ScriptedModel(SCRIPTS, streaming="no_stream_options") as server:
        client = model(server, "auto")
        messages = conversation("same [hermes]")
        reply = client.complete(messages, [], seconds=30)
        again = client.complete(messages, [], seconds=30)
        sent = [(r["body"].get("stream"), r["body"].get("stream_options")) for r in server.requests]
    assert sent == [(True, {"include_usage": True}), (True, None), (True, None)]
    assert reply == again and "<tool_call>" in reply.message["content"]
    assert reply.usage.estimated and reply.usage.prompt_tokens > 0
    assert reply.usage != Usage(reply.usage.prompt_tokens, reply.usage.completion_tokens)


@pytest.mark.parametrize(("mode", "works"), [("auto", True), ("on", False)])
def test_a_server_that_refuses_streaming(mode: StreamMode, works: bool) -> None:
    with ScriptedModel(SCRIPTS, streaming="none") as server:
        messages = conversation("same [native]")
        if not works:
            with pytest.raises(ModelError, match="HTTP 400"):
                model(server, mode).complete(messages, [], seconds=30)
            return
        reply = model(server, mode).complete(messages, [], seconds=30)
        assert [r["body"].get("stream") for r in server.requests] == [True, None]
    assert len(reply.tool_calls) == 2 and not reply.usage.estimated


def test_a_server_that_ignores_stream_answers_whole_and_is_understood() -> None:
    with ScriptedModel(SCRIPTS, streaming="ignored") as server:
        messages = conversation("same [native]")
        reply = model(server, "on").complete(messages, [], seconds=30)
        whole = model(server, "off").complete(messages, [], seconds=30)
        assert server.requests[0]["body"]["stream"] is True and not server.streams
    assert reply == whole and len(reply.tool_calls) == 2
