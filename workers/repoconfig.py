"""The target repository's `.github/codex.yml`: how to set up, test and limit a task there.

    setup:                       # commands, run in order in the setup phase (may see setup_secrets)
      - pip install --no-index --find-links wheels -r requirements.txt
    env: {DJANGO_SETTINGS_MODULE: app.settings}   # plain variables, both phases
    setup_secrets: [PRIVATE_INDEX_TOKEN]          # names of the bot's settings, setup phase only
    test: python -m pytest -q
    image: codexbot-sandbox:latest
    allow_workflow_changes: false
    protected_paths: ["migrations/**", "LICENSE"]
    model: gpt-4.1
    tool_protocol: auto          # auto | native | text (for a model server without tool calls)
    limits: {steps: 40, tokens: 400000, wall_seconds: 1800, output_bytes: 64000, max_tokens: 4096}

A missing file means the defaults. An invalid one raises `RepoConfigError`, whose message quotes
the problem and its line (`.github/codex.yml, line 3: setup must be a list of strings`), ready to
be shown to the user as the reason the task stopped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from workers.repofiles import RepoFileError, read_repo_file

CONFIG_PATH = ".github/codex.yml"
MAX_CONFIG_BYTES = 64 * 1024
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")
# Variables setup and the agent may not override: they would break the sandbox or leak through it.
TOOL_PROTOCOLS = ("auto", "native", "text")
RESERVED_ENV = frozenset({"PATH", "HOME", "USER"})
RESERVED_PREFIX = "CODEXBOT_"
# Variables that change how a shell, git, the dynamic loader or an interpreter starts: each could
# run code or steer git in a step the bot runs. By name, then by prefix; a few plain behaviour
# switches of Python stay allowed.
STARTUP_ENV: dict[str, str] = {
    **dict.fromkeys(
        (
            "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PROMPT_COMMAND", "PS4", "IFS", "CDPATH",
            "GLOBIGNORE", "EXECIGNORE", "POSIXLY_CORRECT", "INPUTRC",
        ),
        "how shells start",
    ),
    "XDG_CONFIG_HOME": "which configuration git reads",
    **dict.fromkeys(("GCONV_PATH", "LOCPATH", "GLIBC_TUNABLES"), "what the C library loads"),
    **dict.fromkeys(
        (
            "PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB", "RUBYOPT", "RUBYLIB", "NODE_OPTIONS",
            "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "LUA_INIT",
        ),
        "how an interpreter starts",
    ),
}  # fmt: skip
STARTUP_PREFIXES = (
    ("BASH_", "how shells start"),
    ("GIT_", "how git runs"),
    ("LD_", "what the dynamic loader loads"),
    ("PYTHON", "how Python starts"),
)
# Plain switches, and PYTHONPATH: how a project says where its code is (`src/`). The bot's own
# Python in the sandbox runs isolated (`python3 -I`), so these steer only the project's code.
PYTHON_SWITCHES = frozenset(
    {
        "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONHASHSEED", "PYTHONIOENCODING",
        "PYTHONUTF8", "PYTHONFAULTHANDLER", "PYTHONDEVMODE", "PYTHONTRACEMALLOC", "PYTHONPATH",
    }
)  # fmt: skip


class RepoConfigError(ValueError):
    """The file is invalid; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class Limits:
    steps: int | None = None
    tokens: int | None = None
    wall_seconds: int | None = None
    output_bytes: int | None = None
    max_tokens: int | None = None  # of one model reply


@dataclass(frozen=True)
class RepoConfig:
    setup: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # ordered pairs; a tuple so the config stays hashable
    setup_secrets: tuple[str, ...] = ()
    test: str | None = None
    image: str | None = None
    allow_workflow_changes: bool = False
    protected_paths: tuple[str, ...] = ()
    model: str | None = None
    tool_protocol: Literal["auto", "native", "text"] | None = None  # None: the bot's setting
    limits: Limits = field(default_factory=Limits)

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


DEFAULT = RepoConfig()


# ---------------------------------------------------------------------------- YAML with lines


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers, for every mapping, the line of each key and value."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        lines[key] = value_node.start_mark.line + 1
    return _Mapping(mapping, lines, node.start_mark.line + 1)


class _Mapping(dict):  # type: ignore[type-arg]
    def __init__(self, values: dict[Any, Any], lines: dict[Any, int], line: int) -> None:
        super().__init__(values)
        self.lines = lines
        self.line = line


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,  # type: ignore[arg-type]
)


def _fail(line: int | None, message: str) -> RepoConfigError:
    where = f"{CONFIG_PATH}, line {line}" if line else CONFIG_PATH
    return RepoConfigError(f"{where}: {message}")


def _string_list(value: Any, key: str, line: int, *, allow_string: bool = False) -> tuple[str, ...]:
    if allow_string and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise _fail(line, f"{key} must be a list of non-empty strings")
    return tuple(value)


def _positive_int(value: Any, key: str, line: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(line, f"limits.{key} must be a positive whole number, not {value!r}")
    return value


def _limits(value: Any, line: int) -> Limits:
    if not isinstance(value, dict):
        raise _fail(line, "limits must be a mapping (steps, tokens, wall_seconds, output_bytes)")
    lines = getattr(value, "lines", {})
    known = set(Limits.__dataclass_fields__)
    for key in value:
        if key not in known:
            raise _fail(lines.get(key, line), f"unknown key limits.{key} (known: {sorted(known)})")
    return Limits(
        **{key: _positive_int(item, key, lines.get(key, line)) for key, item in value.items()}
    )


def startup_effect(name: str) -> str | None:
    """What setting `name` would change about how programs start, or None when it is plain."""
    if name in STARTUP_ENV:
        return STARTUP_ENV[name]
    if name in PYTHON_SWITCHES:
        return None
    for prefix, effect in STARTUP_PREFIXES:
        if name.startswith(prefix):
            return effect
    return None


def _env(value: Any, line: int) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _fail(line, "env must be a mapping of NAME: value")
    lines = getattr(value, "lines", {})
    pairs = []
    for name, item in value.items():
        where = lines.get(name, line)
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise _fail(where, f"env: {name!r} is not a valid variable name")
        if name in RESERVED_ENV or name.startswith(RESERVED_PREFIX):
            raise _fail(where, f"env: {name} is reserved and cannot be set")
        steers = startup_effect(name)
        if steers:
            raise _fail(where, f"env: {name} cannot be set: it changes {steers}")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise _fail(where, f"env.{name} must be a string or a number")
        pairs.append((name, str(item)))
    return tuple(pairs)


def parse(text: str) -> RepoConfig:
    """The config in `text` (the file's content), or RepoConfigError naming line and problem."""
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise _fail(None, f"the file is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        raise _fail(line, f"not valid YAML: {error.problem or error}") from None
    except yaml.YAMLError as error:
        raise _fail(None, f"not valid YAML: {error}") from None
    if data is None:
        return DEFAULT
    if not isinstance(data, dict):
        raise _fail(1, "the file must be a mapping of keys (setup, env, test, ...)")
    lines: dict[Any, int] = getattr(data, "lines", {})
    values: dict[str, Any] = {}
    for key, value in data.items():
        line = lines.get(key, 1)
        if key == "setup":
            values["setup"] = _string_list(value, key, line, allow_string=True)
        elif key == "env":
            values["env"] = _env(value, line)
        elif key == "setup_secrets":
            names = _string_list(value, key, line)
            for name in names:
                if not ENV_NAME.match(name):
                    raise _fail(line, f"setup_secrets: {name!r} is not a valid variable name")
            values["setup_secrets"] = names
        elif key in ("test", "model"):
            if not isinstance(value, str) or not value.strip():
                raise _fail(line, f"{key} must be a non-empty string")
            values[key] = value
        elif key == "image":
            if not isinstance(value, str) or not IMAGE_NAME.match(value):
                raise _fail(line, "image must be an image name like codexbot-sandbox:latest")
            values["image"] = value
        elif key == "allow_workflow_changes":
            if not isinstance(value, bool):
                raise _fail(line, "allow_workflow_changes must be true or false")
            values[key] = value
        elif key == "protected_paths":
            values[key] = _string_list(value, key, line)
        elif key == "limits":
            values["limits"] = _limits(value, line)
        elif key == "tool_protocol":
            if value not in TOOL_PROTOCOLS:
                raise _fail(line, f"tool_protocol must be one of {', '.join(TOOL_PROTOCOLS)}")
            values[key] = value
        else:
            known = sorted(RepoConfig.__dataclass_fields__)
            raise _fail(line, f"unknown key {key!r} (known: {', '.join(known)})")
    return RepoConfig(**values)


def load(checkout: Path) -> RepoConfig:
    """The config of the repository checked out at `checkout`; defaults when there is none."""
    try:
        raw = read_repo_file(checkout, CONFIG_PATH, MAX_CONFIG_BYTES)
    except RepoFileError as error:
        raise RepoConfigError(str(error)) from None
    if raw is None:
        return DEFAULT
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(None, "is not UTF-8 text") from None
    return parse(text)
