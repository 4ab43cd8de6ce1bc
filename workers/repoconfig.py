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
    review: auto                 # review every PR a person opens or marks ready (default: off)
    fix_ci: true                 # fix the bot's own PRs when their CI fails (default: false)
    fix_ci_rounds: 2             # at most this many such fixes per PR
    attempts: 3                  # tries in parallel, the tests choose (at most CODEX_MAX_ATTEMPTS)
    attempts_stop_on_green: true # the other tries stop once one passes the tests
    limits: {steps: 40, tokens: 400000, wall_seconds: 1800, output_bytes: 64000, max_tokens: 4096}
    repos: [acme/api, acme/shared]   # related repositories the agent may read (not change)

A missing file means the defaults; the keys are a pydantic model that refuses unknown ones. An
invalid file raises `RepoConfigError`, whose message quotes the problem and its line
(`.github/codex.yml, line 3: setup must be a list of strings`), ready to be shown to the user as
the reason the task stopped.
"""

from __future__ import annotations

import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails, PydanticCustomError

from workers.repofiles import RepoFileError, read_repo_file

CONFIG_PATH = ".github/codex.yml"
MAX_CONFIG_BYTES = 64 * 1024
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
MAX_RELATED_REPOS = 5
IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._/:@-]{0,254}$")
# Variables setup and the agent may not override: they would break the sandbox or leak through it.
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


def _refuse(message: str, key: Any) -> PydanticCustomError:
    """An error about one entry of a mapping: `key` finds its line."""
    return PydanticCustomError("codexbot", message, {"key": key})


def _env_pairs(value: Any) -> Any:
    """`env` as written (a mapping) to ordered pairs, refusing what would steer the sandbox."""
    if isinstance(value, tuple):
        return value  # built in code, not read from a file
    if not isinstance(value, dict):
        raise PydanticCustomError("codexbot", "env must be a mapping of NAME: value")
    pairs = []
    for name, item in value.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise _refuse(f"env: {name!r} is not a valid variable name", name)
        if name in RESERVED_ENV or name.startswith(RESERVED_PREFIX):
            raise _refuse(f"env: {name} is reserved and cannot be set", name)
        steers = startup_effect(name)
        if steers:
            raise _refuse(f"env: {name} cannot be set: it changes {steers}", name)
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise _refuse(f"env.{name} must be a string or a number", name)
        pairs.append((name, str(item)))
    return tuple(pairs)


def _one_or_more(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _off_if_false(value: Any) -> Any:
    return "off" if value is False else value


def _not_blank(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise PydanticCustomError("codexbot", "must be a non-empty string")
    return value


Text = Annotated[str, Strict(), StringConstraints(min_length=1)]
PositiveWhole = Annotated[int, Strict(), Field(gt=0)]
EnvName = Annotated[str, Strict(), StringConstraints(pattern=ENV_NAME.pattern)]
RepoName = Annotated[str, Strict(), StringConstraints(pattern=REPO_NAME.pattern)]
ImageName = Annotated[str, Strict(), StringConstraints(pattern=IMAGE_NAME.pattern)]
FILE = ConfigDict(extra="forbid")


# Frozen pydantic dataclasses: hashable, and `dataclasses.asdict` still reads them.
@dataclass(frozen=True, config=FILE)
class Limits:
    steps: PositiveWhole | None = None
    tokens: PositiveWhole | None = None
    wall_seconds: PositiveWhole | None = None
    output_bytes: PositiveWhole | None = None
    max_tokens: PositiveWhole | None = None  # of one model reply


@dataclass(frozen=True, config=FILE)
class RepoConfig:
    setup: Annotated[tuple[Text, ...], BeforeValidator(_one_or_more)] = ()
    # Ordered pairs; a tuple so the config stays hashable.
    env: Annotated[tuple[tuple[str, str], ...], BeforeValidator(_env_pairs)] = ()
    setup_secrets: tuple[EnvName, ...] = ()
    test: Annotated[Text | None, BeforeValidator(_not_blank)] = None
    image: ImageName | None = None
    allow_workflow_changes: Annotated[bool, Strict()] = False
    protected_paths: tuple[Text, ...] = ()
    model: Annotated[Text | None, BeforeValidator(_not_blank)] = None
    limits: Limits = field(default_factory=Limits)
    tool_protocol: Literal["auto", "native", "text"] | None = None
    # YAML reads a bare `off` as false.
    review: Annotated[Literal["auto", "off"], BeforeValidator(_off_if_false)] = "off"
    fix_ci: Annotated[bool, Strict()] = False
    fix_ci_rounds: PositiveWhole = 2
    attempts: PositiveWhole = 1  # tries of one task, chosen by the tests (`workers.attempts`)
    attempts_stop_on_green: Annotated[bool, Strict()] = True
    # Related repositories of the same installation the agent may read (`workers.coderepos`).
    repos: Annotated[tuple[RepoName, ...], Field(max_length=MAX_RELATED_REPOS)] = ()

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


DEFAULT = RepoConfig()
_VALIDATOR = TypeAdapter(RepoConfig)
KNOWN_KEYS = tuple(RepoConfig.__dataclass_fields__)
KNOWN_LIMITS = tuple(Limits.__dataclass_fields__)
# What each key must be, for the user: pydantic's own wording names types, not our file.
MUST_BE = {
    "setup": "setup must be a list of non-empty strings",
    "setup_secrets": "setup_secrets must be a list of non-empty strings",
    "protected_paths": "protected_paths must be a list of non-empty strings",
    "test": "test must be a non-empty string",
    "model": "model must be a non-empty string",
    "image": "image must be an image name like codexbot-sandbox:latest",
    "allow_workflow_changes": "allow_workflow_changes must be true or false",
    "limits": "limits must be a mapping (steps, tokens, wall_seconds, output_bytes, max_tokens)",
    "tool_protocol": "tool_protocol must be auto, native or text",
    "review": "review must be auto or off",
    "fix_ci": "fix_ci must be true or false",
    "fix_ci_rounds": "fix_ci_rounds must be a whole number above 0",
    "attempts": "attempts must be a whole number above 0",
    "attempts_stop_on_green": "attempts_stop_on_green must be true or false",
    "repos": f"repos must be a list of at most {MAX_RELATED_REPOS} repositories named owner/name",
}


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


def _line(data: Any, loc: tuple[int | str, ...], key: Any = None) -> int:
    """The line of what `loc` points at in the file (the nearest mapping key found on the way)."""
    line, node = 1, data
    for part in (*loc, key) if key is not None else loc:
        if not isinstance(node, _Mapping) or part not in node:
            break
        line, node = node.lines.get(part, line), node[part]
    return line


def _message(error: ErrorDetails) -> str:
    """Our wording for one pydantic error."""
    loc, kind = error["loc"], error["type"]
    if kind == "codexbot":  # ours, already worded for the user
        text = error["msg"]
        return text if text.startswith(str(loc[0])) else f"{loc[0]} {text}"
    if kind == "unexpected_keyword_argument":
        if len(loc) > 1:
            return f"unknown key limits.{loc[-1]} (known: {list(KNOWN_LIMITS)})"
        return f"unknown key {loc[-1]!r} (known: {', '.join(sorted(KNOWN_KEYS))})"
    if loc[0] == "limits" and len(loc) > 1:
        return f"limits.{loc[1]} must be a positive whole number, not {error['input']!r}"
    if loc[0] == "setup_secrets" and kind == "string_pattern_mismatch":
        return f"setup_secrets: {error['input']!r} is not a valid variable name"
    return MUST_BE.get(str(loc[0]), f"{loc[0]}: {error['msg']}")


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
    for key in data:
        if not isinstance(key, str):
            raise _fail(_line(data, (key,)), f"unknown key {key!r}")
    try:
        return _VALIDATOR.validate_python(data)
    except ValidationError as invalid:
        first = invalid.errors()[0]
        key = (first.get("ctx") or {}).get("key")
        raise _fail(_line(data, first["loc"], key), _message(first)) from None


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
