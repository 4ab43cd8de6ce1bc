import pytest

from codexbot.settings import SettingsError, load_settings
from tests.conftest import FAKE_SECRETS

REQUIRED = {
    "GITHUB_APP_ID": "12",
    "GITHUB_PRIVATE_KEY": FAKE_SECRETS["pem_key"],
    "GITHUB_WEBHOOK_SECRET": "s3cret-value",
    "OPENAI_API_KEY": "sk-test-key-value",
}


@pytest.fixture
def env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith(("GITHUB_", "OPENAI_", "CODEX_", "REDIS_")):
            monkeypatch.delenv(name)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_defaults(env):
    settings = load_settings()
    assert settings.github_api_url == "https://api.github.com"
    assert settings.codex_trigger_label == "codex"
    assert settings.private_key_pem().splitlines()[1] == "abc"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GITHUB_APP_ID", None, "GITHUB_APP_ID: is not set"),
        ("GITHUB_APP_ID", "twelve", "GITHUB_APP_ID: Input should be a valid integer"),
        ("GITHUB_APP_ID", "-1", "GITHUB_APP_ID: Input should be greater than 0"),
        ("GITHUB_WEBHOOK_SECRET", None, "GITHUB_WEBHOOK_SECRET: is not set"),
        ("OPENAI_API_KEY", None, "OPENAI_API_KEY: is not set"),
        ("GITHUB_PRIVATE_KEY", None, "GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH must be set"),
        ("GITHUB_API_URL", "api.github.com", "GITHUB_API_URL: must be an http(s) URL"),
        ("OPENAI_BASE_URL", "ftp://models", "OPENAI_BASE_URL: must be an http(s) URL"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL: must be a redis://"),
        ("CODEX_TRIGGER_LABEL", "  ", "CODEX_TRIGGER_LABEL: must not be empty"),
    ],
)
def test_a_bad_setting_is_named_in_one_line(env, name, value, message):
    if value is None:
        env.delenv(name)
    else:
        env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_unreadable_key_file_is_named(env, tmp_path):
    env.delenv("GITHUB_PRIVATE_KEY")
    env.setenv("GITHUB_PRIVATE_KEY_PATH", str(tmp_path / "missing.pem"))
    with pytest.raises(SettingsError, match="^GITHUB_PRIVATE_KEY_PATH: cannot read"):
        load_settings().private_key_pem()


def test_rotation_accepts_comma_separated_secrets(env):
    env.setenv("GITHUB_WEBHOOK_SECRET", "old-secret, new-secret")
    assert load_settings().webhook_secrets() == [b"old-secret", b"new-secret"]


def test_cli_stops_with_one_line(env):
    import subprocess
    import sys
    from pathlib import Path

    env.delenv("GITHUB_WEBHOOK_SECRET")
    codexbot = Path(sys.executable).parent / "codexbot"
    done = subprocess.run([codexbot, "serve"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "codexbot: GITHUB_WEBHOOK_SECRET: is not set"
