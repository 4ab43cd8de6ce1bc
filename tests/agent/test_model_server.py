"""The scripted model server over raw HTTP: protocol shape, script choice, faults, recording."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from sim.model import (
    Flaky,
    Script,
    ScriptedModel,
    first_user_text,
    load_scripts,
    takes_wrong_fix,
    turns_of,
)
from tests.agent.support import DEMO_SCRIPT, ROOT

KEY = "sk-sim-server-tests-abcdef"
SCRIPTS = [
    Script(
        name="two-steps",
        match="alpha issue",
        steps=[
            {"tool": "shell", "arguments": {"command": "ls"}, "content": "Looking around."},
            {
                "tool_calls": [
                    {"tool": "shell", "arguments": {"command": "pwd"}},
                    {"tool": "shell", "arguments": "{broken"},
                ]
            },
            {"content": "plain words"},
        ],
    ),
    Script(
        name="faulty",
        match="faulty issue",
        steps=[
            {"error": 500},
            {"tool": "shell", "arguments": {"command": "one"}},
            {"error": 429, "retry_after": 2, "tool": "shell", "arguments": {"command": "two"}},
            {"delay": 0.3, "content": "slow"},
        ],
    ),
    Script(name="fallback", default=True, steps=[{"content": "default answer"}]),
]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModel]:
    with ScriptedModel(SCRIPTS, api_key=KEY, models=["m-one", "m-two"]) as running:
        yield running


def conversation(first_user: str, assistant_turns: int = 0) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": f"Fix {first_user} please"},
    ]
    for index in range(assistant_turns):
        messages.append({"role": "assistant", "content": None, "tool_calls": []})
        messages.append({"role": "user", "content": f"result {index}"})
    return messages


def chat(
    server: ScriptedModel, messages: list[dict[str, Any]], key: str = KEY
) -> requests.Response:
    return requests.post(
        f"{server.base_url}/chat/completions",
        json={"model": "m-two", "messages": messages},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_models_are_listed(server: ScriptedModel) -> None:
    response = requests.get(
        f"{server.base_url}/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    )
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["m-one", "m-two"]


@pytest.mark.parametrize("key", ["", "sk-wrong"])
def test_wrong_key_gets_openai_shaped_401(server: ScriptedModel, key: str) -> None:
    response = chat(server, conversation("alpha issue"), key=key)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"


def test_completion_is_well_formed_and_the_step_follows_the_history(server: ScriptedModel) -> None:
    first = chat(server, conversation("alpha issue")).json()
    assert first["object"] == "chat.completion" and first["model"] == "m-two"
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Looking around."
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "shell"
    assert json.loads(call["function"]["arguments"]) == {"command": "ls"}
    usage = first["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0

    second = chat(server, conversation("alpha issue", 1)).json()["choices"][0]["message"]
    calls = second["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == ['{"command": "pwd"}', "{broken"]
    assert len({c["id"] for c in calls}) == 2

    third = chat(server, conversation("alpha issue", 2)).json()["choices"][0]
    assert third["finish_reason"] == "stop" and third["message"]["content"] == "plain words"
    assert "tool_calls" not in third["message"]


def test_the_server_is_stateless_a_replay_gets_the_same_step(server: ScriptedModel) -> None:
    answers = [chat(server, conversation("alpha issue", 1)).json() for _ in range(2)]
    assert answers[0]["choices"] == answers[1]["choices"]


def test_past_the_end_of_a_script_the_model_finishes(server: ScriptedModel) -> None:
    message = chat(server, conversation("alpha issue", 3)).json()["choices"][0]["message"]
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "finish"
    assert "ran out" in json.loads(call["function"]["arguments"])["title"]


def test_unmatched_conversations_get_the_default_script(server: ScriptedModel) -> None:
    message = chat(server, conversation("something else")).json()["choices"][0]["message"]
    assert message["content"] == "default answer"


def test_without_a_default_an_unmatched_conversation_finishes() -> None:
    with ScriptedModel([Script(match="x-only", steps=[{"content": "x"}])]) as lonely:
        body = chat(lonely, conversation("nothing")).json()
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert "no script" in json.loads(call["function"]["arguments"])["title"]


def test_errors_are_served_once_per_conversation_and_step(server: ScriptedModel) -> None:
    failed = chat(server, conversation("faulty issue"))
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"
    retried = chat(server, conversation("faulty issue"))
    assert retried.status_code == 200
    assert (
        "one" in retried.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    )

    limited = chat(server, conversation("faulty issue", 1))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert chat(server, conversation("faulty issue", 1)).status_code == 200
    # Another conversation on the same script gets its own faults.
    assert chat(server, conversation("faulty issue, second copy")).status_code == 500


@pytest.mark.parametrize(
    "body",
    [{"model": "m"}, {"messages": "not a list"}],
)
def test_bad_requests_get_a_400(server: ScriptedModel, body: dict[str, Any]) -> None:
    response = requests.post(
        f"{server.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_delay_slows_the_answer(server: ScriptedModel) -> None:
    started = time.monotonic()
    body = chat(server, conversation("faulty issue", 2)).json()
    assert time.monotonic() - started >= 0.3
    assert body["choices"][0]["message"]["content"] == "slow"


def test_requests_are_recorded_without_the_authorization_header(server: ScriptedModel) -> None:
    chat(server, conversation("record me"))
    recorded = server.chat_requests_for("record me")
    assert recorded[-1]["body"]["messages"][1]["content"] == "Fix record me please"
    assert recorded[-1]["path"] == "/v1/chat/completions"
    assert all(k.lower() != "authorization" for k in recorded[-1]["headers"])
    over_http = requests.get(f"http://127.0.0.1:{server.port}/_sim/requests", timeout=10).json()
    assert KEY not in json.dumps(over_http)
    assert any(first_user_text(r["body"]["messages"]) == "Fix record me please" for r in over_http)


def test_the_openai_sdk_talks_to_the_server(server: ScriptedModel) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    try:
        completion = client.chat.completions.create(
            model="m-one", messages=[{"role": "user", "content": "Fix alpha issue please"}]
        )
    finally:
        client.close()
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "shell"  # type: ignore[union-attr]


def test_scripts_load_from_json_and_yaml(tmp_path: Path) -> None:
    demo = load_scripts(DEMO_SCRIPT)[0]  # then one copy per dialect
    assert demo.match == "word_count miscounts text with repeated whitespace"
    assert [turn.answer["tool"] for turn in turns_of(demo)][-1] == "finish"
    yaml_file = tmp_path / "scripts.yaml"
    yaml_file.write_text(
        "scripts:\n"
        "  - name: y\n    match: yaml issue\n    steps:\n"
        "      - {error: 429, retry_after: 1}\n"
        "      - {tool: shell, arguments: {command: ls}}\n"
    )
    (script,) = load_scripts(yaml_file)
    (turn,) = turns_of(script)
    assert turn.error == 429 and turn.answer["tool"] == "shell"


def test_unknown_step_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown step keys"):
        turns_of(Script(steps=[{"tool": "shell", "argumnets": {}}]))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_command_line_serves_a_script_file() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.model", "--port", str(port), "--script", str(DEMO_SCRIPT)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not come up"
                assert process.poll() is None, "the server exited"
                time.sleep(0.1)  # poll interval, bounded by the deadline above
        assert response.status_code == 200
        body = requests.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "word_count miscounts text with "
                                "repeated whitespace"}]},
            timeout=10,
        ).json()  # fmt: skip
        assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == (
            '{"command": "ls -R"}'
        )
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_dialect_copy_wins_over_the_script_it_extends_and_nothing_else() -> None:
    from sim.model import choose_script, scripts_from_data

    base, hermes = scripts_from_data(
        {"name": "b", "match": "Work that runs out", "dialects": ["hermes"], "steps": []}
    )
    other = Script(name="o", match="Please add the rest", steps=[])
    assert hermes.match == "Work that runs out [hermes]" and hermes.dialect == "hermes"
    assert choose_script([base, hermes, other], "Work that runs out") is base
    assert choose_script([base, hermes, other], "x Work that runs out [hermes]") is hermes
    # A longer match text that does not extend the first one does not win over it.
    assert choose_script([other, base], "Work that runs out; Please add the rest") is other


def test_flaky_mode_takes_a_wrong_fix_by_the_seed_of_each_run() -> None:
    patch = "m.py\n<<<<<<< SEARCH\n    return a\n=======\n    return b\n>>>>>>> REPLACE\n"
    script = Script(
        name="flaky",
        match="flaky issue",
        steps=[{"tool": "apply_patch", "arguments": {"patch": patch}}],
    )
    # The seed where the run with seed 1 goes wrong and the run with seed 2 does not.
    flaky = next(
        Flaky(0.5, seed)
        for seed in range(100)
        if takes_wrong_fix(Flaky(0.5, seed), "flaky", 1)
        and not takes_wrong_fix(Flaky(0.5, seed), "flaky", 2)
    )
    with ScriptedModel([script], flaky=flaky) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none")

        def first_patch(seed: int) -> str:
            reply = client.chat.completions.create(
                model="scripted-model",
                messages=[{"role": "user", "content": "the flaky issue"}],
                seed=seed,
            )
            call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
            return json.loads(call.function.arguments)["patch"]  # type: ignore[union-attr]

        assert first_patch(2) == patch
        wrong = first_patch(1)
        assert wrong == patch.replace("    return b\n", "    # attempted fix\n    return a\n")
        assert first_patch(1) == wrong  # the same run gets the same answer again
    assert not any(takes_wrong_fix(Flaky(0.0, 1), "flaky", n) for n in range(20))
    assert all(takes_wrong_fix(Flaky(1.0, 1), "flaky", n) for n in range(20))
