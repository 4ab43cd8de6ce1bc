"""All settings in one object, read from the environment (see README, "Settings")."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line naming it."""


class Settings(BaseSettings):
    # An empty variable is an unset one (.env.example leaves the App lines empty).
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", env_ignore_empty=True
    )

    github_app_id: int = Field(gt=0)
    github_private_key: SecretStr | None = None
    github_private_key_path: Path | None = None
    github_webhook_secret: SecretStr
    github_api_url: str = "https://api.github.com"
    redis_url: str = "redis://127.0.0.1:6379/0"
    openai_api_key: SecretStr
    openai_base_url: str | None = None
    codex_model: str = "gpt-4.1"
    codex_trigger_label: str = "codex"
    codex_sandbox_image: str = "codexbot-sandbox:latest"
    codex_data_dir: Path = Path("/var/lib/codexbot")
    codex_queue: str = "codex"
    codex_fast_queue: str = "codex-fast"
    codex_trusted_bots: str = ""
    codex_public_url: str | None = None
    codex_dashboard_token: SecretStr | None = None
    codex_co_author: bool = False
    codex_job_timeout: int = Field(default=1800, gt=0)
    codex_redeliver_interval: int = Field(default=300, ge=0)
    codex_lease_seconds: int = Field(default=30, ge=3)
    codex_shutdown_grace: int = Field(default=540, ge=0)
    codex_tool_protocol: Literal["auto", "native", "text"] = "auto"
    codex_model_stream: Literal["auto", "on", "off"] = "auto"
    codex_max_tokens: int = Field(default=4096, gt=0)
    codex_model_timeout_floor: float = Field(default=60.0, gt=0)
    codex_trajectory_ttl: int = Field(default=14 * 24 * 3600, gt=0)
    codex_max_attempts: int = Field(default=4, gt=0)  # tries of one task, whatever is asked
    codex_attempts_tokens: int = Field(default=1_000_000, gt=0)  # shared by a task's tries
    codex_pool_size: int = Field(default=1, ge=0)
    codex_pool_idle_seconds: int = Field(default=1800, gt=0)
    codex_tests_ahead: bool = True  # the tests run while the model answers (workers.agentbox)

    @field_validator("github_api_url", "openai_base_url", "codex_public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("codex_trigger_label", "codex_model", "codex_sandbox_image")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @model_validator(mode="after")
    def _one_private_key(self) -> Settings:
        if self.github_private_key is None and self.github_private_key_path is None:
            raise ValueError("GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH must be set")
        return self

    def private_key_pem(self) -> str:
        """The App's private key, read from the setting or the file it names."""
        if self.github_private_key is not None:
            return self.github_private_key.get_secret_value().replace("\\n", "\n")
        assert self.github_private_key_path is not None
        try:
            return self.github_private_key_path.read_text()
        except OSError as error:
            raise SettingsError(
                f"GITHUB_PRIVATE_KEY_PATH: cannot read {self.github_private_key_path}: "
                f"{error.strerror}"
            ) from None

    def webhook_secrets(self) -> list[bytes]:
        """Every accepted webhook secret: several, comma-separated, while one is rotated."""
        raw = self.github_webhook_secret.get_secret_value()
        return [part.strip().encode() for part in raw.split(",") if part.strip()]

    def task_url(self, task_id: str) -> str:
        """Where a person reads a task's trajectory, if the receiver is reachable."""
        return f"{self.codex_public_url}/tasks/{task_id}" if self.codex_public_url else ""

    def trusted_bots(self) -> set[str]:
        """Bot logins whose commands count (a CI workflow asking for a fix)."""
        return {name.strip().lower() for name in self.codex_trusted_bots.split(",") if name.strip()}

    def secret_values(self) -> list[str]:
        """Every secret the bot knows from its settings, for redaction."""
        values = [
            self.github_webhook_secret.get_secret_value(),
            self.openai_api_key.get_secret_value(),
        ]
        values += [secret.decode() for secret in self.webhook_secrets()]
        if self.codex_dashboard_token is not None:
            values.append(self.codex_dashboard_token.get_secret_value())
        # An unreadable key is reported when it is first needed; nothing to redact meanwhile.
        with contextlib.suppress(SettingsError):
            values.append(self.private_key_pem())
        return values


DEFAULT_DATA_DIR = "/var/lib/codexbot"


def settings_file() -> Path:
    """Where ``codexbot serve``'s set-up page writes the App's credentials (and the loader reads
    them): ``CODEX_SETTINGS_FILE``, else ``app.env`` in ``CODEX_DATA_DIR``."""
    named = os.environ.get("CODEX_SETTINGS_FILE", "").strip()
    if named:
        return Path(named)
    return Path(os.environ.get("CODEX_DATA_DIR", "").strip() or DEFAULT_DATA_DIR) / "app.env"


def app_configured() -> bool:
    """Whether the App's id is known, from the environment or the settings file."""
    if os.environ.get("GITHUB_APP_ID", "").strip():
        return True
    try:
        return any(
            line.strip().upper().startswith("GITHUB_APP_ID=")
            for line in settings_file().read_text().splitlines()
        )
    except OSError:
        return False


def write_settings_file(path: Path, values: dict[str, str]) -> None:
    """Write ``KEY="value"`` lines readable by the owner alone (0600), replacing the file whole.

    Values are escaped for dotenv's double quotes (``\\n`` for a newline), so a PEM fits a line.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, value in values.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'{key}="{escaped}"\n')
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.writelines(lines)
    os.replace(partial, path)


def load_settings(**overrides: object) -> Settings:
    """Read the settings, or raise SettingsError with one line naming what is wrong.

    The environment wins over the settings file (``settings_file()``), which holds what the
    set-up page wrote.
    """
    path = settings_file()
    try:
        return Settings(_env_file=path if path.is_file() else None, **overrides)  # type: ignore[arg-type,call-arg]
    except ValidationError as error:
        raise SettingsError(describe_error(error.errors()[0])) from None


def describe_error(problem: Any) -> str:
    """One pydantic validation error as one line naming the setting."""
    name = "_".join(str(part) for part in problem["loc"]).upper() or "settings"
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "missing":
        message = "is not set"
        if name == "GITHUB_APP_ID":
            message += " (run `codexbot serve` and open /setup to create the App)"
    return f"{name}: {message}" if problem["loc"] else message
