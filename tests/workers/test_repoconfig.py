"""`.github/codex.yml`: defaults, every key, and errors that quote the line and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.repoconfig import DEFAULT, Limits, RepoConfig, RepoConfigError, load, parse

FULL = """\
setup:
  - pip install --no-index --find-links wheels -r requirements.txt
  - npm ci --offline
env:
  DJANGO_SETTINGS_MODULE: app.settings
  WORKERS: 4
setup_secrets: [PRIVATE_INDEX_TOKEN]
test: python -m pytest -q
image: codexbot-sandbox:latest
allow_workflow_changes: true
protected_paths: ["migrations/**", LICENSE]
model: gpt-4.1-mini
tool_protocol: text
limits: {steps: 40, tokens: 400000, wall_seconds: 1800, output_bytes: 64000, max_tokens: 2048}
"""


def test_every_key() -> None:
    assert parse(FULL) == RepoConfig(
        setup=(
            "pip install --no-index --find-links wheels -r requirements.txt",
            "npm ci --offline",
        ),
        env=(("DJANGO_SETTINGS_MODULE", "app.settings"), ("WORKERS", "4")),
        setup_secrets=("PRIVATE_INDEX_TOKEN",),
        test="python -m pytest -q",
        image="codexbot-sandbox:latest",
        allow_workflow_changes=True,
        protected_paths=("migrations/**", "LICENSE"),
        model="gpt-4.1-mini",
        tool_protocol="text",
        limits=Limits(
            steps=40, tokens=400000, wall_seconds=1800, output_bytes=64000, max_tokens=2048
        ),
    )


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n"])
def test_empty_file_means_defaults(text: str) -> None:
    assert parse(text) == DEFAULT


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load(tmp_path) == DEFAULT
    assert DEFAULT.allow_workflow_changes is False and DEFAULT.setup == ()


def test_load_reads_the_file(tmp_path: Path) -> None:
    (tmp_path / ".github").mkdir()
    (tmp_path / ".github" / "codex.yml").write_text("setup: make deps\ntest: make test\n")
    assert load(tmp_path) == RepoConfig(setup=("make deps",), test="make test")


def test_config_is_frozen_and_hashable() -> None:
    config = parse(FULL)
    with pytest.raises(AttributeError):
        config.test = "x"  # type: ignore[misc]
    assert hash(config) == hash(parse(FULL))
    assert config.env_dict == {"DJANGO_SETTINGS_MODULE": "app.settings", "WORKERS": "4"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("setup: [1, 2]\n", ".github/codex.yml, line 1: setup must be a list of non-empty strings"),
        ("test: ok\nsetup:\n  a: b\n", "line 3: setup must be a list of non-empty strings"),
        ("test: ok\nsetpu: [x]\n", "line 2: unknown key 'setpu'"),
        ("env:\n  A: 1\n  9BAD: x\n", "line 3: env: '9BAD' is not a valid variable name"),
        ("env:\n  PATH: /evil\n", "line 2: env: PATH is reserved"),
        ("env:\n  CODEXBOT_WORKSPACE_MAX: 0\n", "line 2: env: CODEXBOT_WORKSPACE_MAX is reserved"),
        ("env:\n  A: 1\n  BASH_ENV: /workspace/x\n", "line 3: env: BASH_ENV cannot be set"),
        ("env:\n  ENV: /workspace/x\n", "line 2: env: ENV cannot be set: it changes how shells"),
        ("env:\n  GIT_CONFIG_COUNT: 1\n", "line 2: env: GIT_CONFIG_COUNT cannot be set"),
        ("env:\n  GIT_DIR: /tmp\n", "line 2: env: GIT_DIR cannot be set: it changes how git"),
        ("env:\n  LD_PRELOAD: /x.so\n", "line 2: env: LD_PRELOAD cannot be set"),
        ("env:\n  LD_AUDIT: /x.so\n", "line 2: env: LD_AUDIT cannot be set"),
        ("env:\n  PYTHONSTARTUP: x.py\n", "line 2: env: PYTHONSTARTUP cannot be set"),
        ("env:\n  PROMPT_COMMAND: x\n", "line 2: env: PROMPT_COMMAND cannot be set"),
        ("env:\n  SHELLOPTS: xtrace\n", "line 2: env: SHELLOPTS cannot be set"),
        ("env:\n  BASHOPTS: x\n", "line 2: env: BASHOPTS cannot be set"),
        ("env:\n  IFS: x\n", "line 2: env: IFS cannot be set"),
        ("env:\n  CDPATH: /tmp\n", "line 2: env: CDPATH cannot be set"),
        ("env:\n  XDG_CONFIG_HOME: /tmp\n", "line 2: env: XDG_CONFIG_HOME cannot be set"),
        ("env:\n  NODE_OPTIONS: -r x\n", "line 2: env: NODE_OPTIONS cannot be set"),
        ("env:\n  A: [1]\n", "line 2: env.A must be a string or a number"),
        ("env: [A]\n", "line 1: env must be a mapping"),
        ("test: ''\n", "line 1: test must be a non-empty string"),
        (
            "\n\nallow_workflow_changes: yes please\n",
            "line 3: allow_workflow_changes must be true or false",
        ),
        ("image: 'UPPER CASE!'\n", "line 1: image must be an image name"),
        ("setup_secrets: [ok, 'not ok']\n", "line 1: setup_secrets: 'not ok' is not a valid"),
        (
            "limits:\n  steps: 10\n  tokens: -1\n",
            "line 3: limits.tokens must be a positive whole number",
        ),
        ("limits:\n  steps: true\n", "line 2: limits.steps must be a positive whole number"),
        ("limits:\n  stpes: 3\n", "line 2: unknown key limits.stpes"),
        ("limits: 3\n", "line 1: limits must be a mapping"),
        ("tool_protocol: tools\n", "line 1: tool_protocol must be auto, native or text"),
        ("test: x\nattempts: 0\n", "line 2: attempts must be a whole number above 0"),
        ("attempts: three\n", "line 1: attempts must be a whole number above 0"),
        ("attempts: 2.5\n", "line 1: attempts must be a whole number above 0"),
        ("attempts_stop_on_green: maybe\n", "line 1: attempts_stop_on_green must be true or"),
        ("- a\n- b\n", "line 1: the file must be a mapping"),
        ("setup: [a\ntest: x\n", "not valid YAML"),
        ("test: x\n  bad: indent\n", ".github/codex.yml, line 2: not valid YAML"),
    ],
)
def test_invalid_files_name_the_line_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(RepoConfigError) as error:
        parse(text)
    assert message in str(error.value)
    assert str(error.value).startswith(".github/codex.yml")


def test_unsafe_yaml_tags_are_refused() -> None:
    with pytest.raises(RepoConfigError, match="not valid YAML"):
        parse("test: !!python/object/apply:os.system ['echo owned']\n")


def test_huge_file_is_refused() -> None:
    with pytest.raises(RepoConfigError, match="larger than"):
        parse("test: x\n" + "#" * 70_000)


def test_symlinked_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".github").mkdir()
    (tmp_path / ".github" / "codex.yml").symlink_to("/etc/passwd")
    with pytest.raises(RepoConfigError, match="regular file"):
        load(tmp_path)


def test_plain_variables_stay_allowed() -> None:
    text = (
        "env:\n  TMPDIR: /tmp/t\n  PYTHONPATH: src\n  PYTHONHASHSEED: 0\n"
        "  DJANGO_SETTINGS_MODULE: app.settings\n"
    )
    assert parse(text).env_dict == {
        "TMPDIR": "/tmp/t",
        "PYTHONPATH": "src",
        "PYTHONHASHSEED": "0",
        "DJANGO_SETTINGS_MODULE": "app.settings",
    }


def test_attempts_default_to_one_try_that_stops_the_others_when_green() -> None:
    assert (DEFAULT.attempts, DEFAULT.attempts_stop_on_green) == (1, True)
    config = parse("attempts: 3\nattempts_stop_on_green: false\n")
    assert (config.attempts, config.attempts_stop_on_green) == (3, False)


def test_tool_protocol_is_one_of_three() -> None:
    assert parse("tool_protocol: text\n").tool_protocol == "text"
    assert DEFAULT.tool_protocol is None
    with pytest.raises(RepoConfigError, match="line 2: tool_protocol must be auto, native or text"):
        parse("test: x\ntool_protocol: json\n")
