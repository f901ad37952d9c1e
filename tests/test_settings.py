"""Every setting is documented, and a wrong value stops the start naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = sorted(name.upper() for name in Settings.model_fields)


@pytest.mark.parametrize("document", [".env.example", "README.md"])
def test_every_setting_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [name for name in SETTINGS if not re.search(rf"\b{name}\b", text)]
    assert missing == []


def test_env_example_loads_as_valid_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    monkeypatch.chdir(tmp_path)
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.llm_provider == "auto"
    assert settings.groq_api_key is None


def test_a_wrong_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_TOOL_ROUNDS", "many")
    monkeypatch.setenv("DATABASE_URL", "mysql://nope")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "MAX_TOOL_ROUNDS" in str(refused.value)
    assert "DATABASE_URL" in str(refused.value)


def test_allowed_hosts_default_to_local_names_and_take_host_names_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the machine
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    assert load_settings().allowed_hosts == ["localhost", "127.0.0.1", "::1"]
    monkeypatch.setenv("ALLOWED_HOSTS", "Chat.Example.com, [::1]")
    assert load_settings().allowed_hosts == ["chat.example.com", "::1"]
    for wrong in ("https://chat.example.com", "chat.example.com:443", "a b"):
        monkeypatch.setenv("ALLOWED_HOSTS", wrong)
        with pytest.raises(SettingsError, match="ALLOWED_HOSTS"):
            load_settings()
