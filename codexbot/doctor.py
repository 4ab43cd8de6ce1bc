"""``codexbot doctor``: check a set-up end to end and say what to fix.

Each check is one row: the settings, the App's key against GitHub, Redis, the Docker engine and
the sandbox image on it, the model endpoint (a tiny request, then one with a tool), and the
webhook URL when ``CODEX_PUBLIC_URL`` is set. Every line printed is redacted of every secret the
settings hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from codexbot.redact import Redactor
from codexbot.settings import Settings, SettingsError, describe_error, load_settings, settings_file

TIMEOUT = 15


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def check_settings() -> tuple[Settings | None, list[Check]]:
    """Every malformed or missing setting is a row; the settings when all are good."""
    try:
        settings = load_settings()
    except SettingsError:
        pass
    else:
        try:
            settings.private_key_pem()
        except SettingsError as error:
            return None, [Check("settings", False, str(error), "point it at the App's .pem")]
        where = f"environment, then {settings_file()}"
        return settings, [Check("settings", True, f"read from the {where}")]
    path = settings_file()
    try:
        Settings(_env_file=path if path.is_file() else None)  # type: ignore[call-arg]
    except ValidationError as error:
        return None, [
            Check(
                "settings",
                False,
                describe_error(problem),
                "set it in the environment or the settings file (README, Settings)",
            )
            for problem in error.errors()
        ]
    return None, []  # pragma: no cover - load_settings failed, so Settings did too


def check_github_app(settings: Settings) -> list[Check]:
    from cryptography.exceptions import UnsupportedAlgorithm

    from workers.github import GitHubError
    from workers.githubapp import GitHubApp

    try:
        app = GitHubApp(
            app_id=settings.github_app_id,
            private_key=settings.private_key_pem(),
            api_url=settings.github_api_url,
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return [
            Check(
                "GitHub App key",
                False,
                "the private key is not a PEM RSA key",
                "download a new private key from the App's settings page",
            )
        ]
    try:
        html_url, accounts = app.check()
    except GitHubError as error:
        return [
            Check(
                "GitHub App key",
                False,
                f"{error} (App id {settings.github_app_id}, {settings.github_api_url})",
                "the key must be this App's: check GITHUB_APP_ID, GITHUB_API_URL and the key",
            )
        ]
    except OSError as error:
        return [Check("GitHub App key", False, f"GitHub unreachable: {error}", "check the network")]
    rows = [Check("GitHub App key", True, f"GitHub accepts the App's JWT ({html_url})")]
    if accounts:
        rows.append(Check("installations", True, f"{len(accounts)}: {', '.join(accounts[:5])}"))
    else:
        rows.append(
            Check(
                "installations",
                False,
                "the App is installed nowhere",
                f"install it: {html_url}/installations/new",
            )
        )
    return rows


def check_redis(settings: Settings) -> list[Check]:
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5).ping()
    except RedisError as error:
        return [Check("redis", False, str(error), "start Redis or fix REDIS_URL")]
    return [Check("redis", True, "answers PING")]


def check_docker(settings: Settings) -> list[Check]:
    import docker
    from docker.errors import DockerException, ImageNotFound

    try:
        client = docker.from_env(timeout=TIMEOUT)
        version = client.version().get("Version", "?")
    except DockerException as error:
        return [
            Check(
                "docker engine",
                False,
                f"unreachable: {error}",
                "start the engine or set DOCKER_HOST to one (README, Running it for real)",
            )
        ]
    rows = [Check("docker engine", True, f"Docker {version}")]
    image = settings.codex_sandbox_image
    try:
        client.images.get(image)
    except ImageNotFound:
        rows.append(
            Check(
                "sandbox image",
                False,
                f"{image} is not on the engine",
                "build it there (`make image`) or pull it from your registry",
            )
        )
    except DockerException as error:
        rows.append(Check("sandbox image", False, str(error), "check the engine"))
    else:
        rows.append(Check("sandbox image", True, image))
    client.close()
    return rows


PING_TOOL = {
    "type": "function",
    "function": {
        "name": "ping",
        "description": "Answer the health check.",
        "parameters": {"type": "object", "properties": {}},
    },
}


def check_model(settings: Settings) -> list[Check]:
    import openai

    client = openai.OpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        timeout=TIMEOUT * 4,
        max_retries=0,
    )
    where = f"{settings.codex_model} at {settings.openai_base_url or 'the OpenAI API'}"
    messages: list[Any] = [{"role": "user", "content": "Reply with OK."}]
    rows = []
    attempts: tuple[tuple[str, dict[str, Any]], ...] = (
        ("model", {}),
        ("model tools", {"tools": [PING_TOOL]}),
    )
    for name, extra in attempts:
        try:
            client.chat.completions.create(
                model=settings.codex_model, messages=messages, max_tokens=16, **extra
            )
        except openai.AuthenticationError:
            rows.append(Check(name, False, f"{where}: key refused", "check OPENAI_API_KEY"))
        except openai.NotFoundError:
            rows.append(Check(name, False, f"{where}: not served", "check CODEX_MODEL"))
        except openai.APIStatusError as error:
            fix = (
                "the agent needs tool calls: enable them on the server (vLLM: "
                "--enable-auto-tool-choice --tool-call-parser ...)"
                if extra
                else "see the endpoint's logs"
            )
            rows.append(Check(name, False, f"{where}: HTTP {error.status_code}", fix))
        except openai.APIError as error:
            rows.append(Check(name, False, f"{where}: {error}", "check OPENAI_BASE_URL"))
        else:
            rows.append(Check(name, True, f"{where} answers" + (" with tools" if extra else "")))
        if not rows[-1].ok:
            break
    client.close()
    return rows


def check_webhook_url(settings: Settings) -> list[Check]:
    import requests

    if not settings.codex_public_url:
        return [Check("webhook URL", True, "CODEX_PUBLIC_URL not set: not checked")]
    url = f"{settings.codex_public_url}/healthz"
    try:
        answer = requests.get(url, timeout=TIMEOUT)
    except requests.RequestException as error:
        return [
            Check(
                "webhook URL",
                False,
                f"{url}: {type(error).__name__}",
                "check DNS, TLS and the reverse proxy in front of `codexbot serve`",
            )
        ]
    if answer.status_code != 200:
        return [Check("webhook URL", False, f"{url}: HTTP {answer.status_code}", "check the proxy")]
    return [Check("webhook URL", True, f"{url} answers 200")]


CHECKS: tuple[Callable[[Settings], list[Check]], ...] = (
    check_github_app,
    check_redis,
    check_docker,
    check_model,
    check_webhook_url,
)


def run_checks() -> tuple[list[Check], list[str]]:
    """Every check's rows, and the secrets to keep out of what is printed."""
    settings, rows = check_settings()
    if settings is None:
        return rows, []
    for check in CHECKS:
        rows += check(settings)
    return rows, settings.secret_values()


def table(rows: list[Check]) -> str:
    """The rows as an aligned text table: check, ok or FAIL, what was found, how to fix it."""
    lines = [("check", "", "found", "fix")]
    lines += [(row.name, "ok" if row.ok else "FAIL", row.detail, row.fix) for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True))
        + ("  " + line[3] if line[3] else "")
        for line in lines
    ).rstrip()


def main(echo: Callable[[str], None]) -> int:
    rows, secrets = run_checks()
    echo(Redactor(secrets)(table(rows)))
    failed = [row for row in rows if not row.ok]
    echo(f"\n{len(failed)} problem(s) found." if failed else "\nAll checks passed.")
    return 1 if failed else 0
