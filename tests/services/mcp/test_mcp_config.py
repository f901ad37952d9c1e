"""`MCP_CONFIG`: the file teams already keep; a wrong one stops the start naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.services.mcp.config import HttpServerConfig, StdioServerConfig, load_mcp_config
from app.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[3]


def test_the_example_file_has_both_kinds() -> None:
    config = load_mcp_config(str(ROOT / ".mcp.example.json"))
    time, github = config.servers["time"], config.servers["github"]
    assert isinstance(time, StdioServerConfig)
    assert time.command == "uvx"
    assert isinstance(github, HttpServerConfig)
    assert github.tools == ["search_issues", "get_issue"]
    assert github.requires_approval("create_issue") is True
    assert github.requires_approval("get_issue") is False
    assert github.forward_credentials is False


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("not json", "not JSON"),
        ('{"servers": {}}', "mcpServers"),
        ('{"mcpServers": {"x": {"args": ["a"]}}}', "mcpServers.x.command"),
        ('{"mcpServers": {"x": {"url": "ftp://x"}}}', "http:// or https://"),
        ('{"mcpServers": {"x": {"command": "a", "timeout": -1}}}', "mcpServers.x.timeout"),
        ('{"mcpServers": {"x": {"command": "a", "requireApproval": "yes"}}}', "requireApproval"),
        ('{"mcpServers": {"a b": {"command": "a"}}}', "server name 'a b'"),
        ('{"mcpServers": {"x": {"command": "a", "colour": "red"}}}', "colour"),
    ],
)
def test_a_wrong_file_stops_the_start_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, complaint: str
) -> None:
    path = tmp_path / "team-mcp.json"
    path.write_text(content)
    monkeypatch.setenv("MCP_CONFIG", str(path))
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "MCP_CONFIG" in message
    assert str(path) in message
    assert complaint in message


def test_a_missing_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_CONFIG", str(tmp_path / "nowhere.json"))
    with pytest.raises(SettingsError, match=r"nowhere\.json: cannot be read"):
        load_settings()


def test_type_fields_and_disabled_servers_are_understood(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    servers = {
        "a": {"type": "stdio", "command": "x"},
        "b": {"type": "streamable-http", "url": "http://127.0.0.1:1/mcp"},
        "c": {"command": "y", "disabled": True},
    }
    path.write_text(json.dumps({"mcpServers": servers}))
    config = load_mcp_config(str(path))
    assert isinstance(config.servers["b"], HttpServerConfig)
    assert list(config.enabled()) == ["a", "b"]


def test_secret_headers_and_env_values_are_redacted_in_logs(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    servers = {
        "a": {"command": "x", "env": {"API_KEY": "k-123", "TZ": "UTC"}},
        "b": {"url": "http://127.0.0.1:1/mcp", "headers": {"Authorization": "Bearer t-456"}},
    }
    path.write_text(json.dumps({"mcpServers": servers}))
    settings = Settings(_env_file=None, mcp_config=str(path))
    assert {"k-123", "Bearer t-456"} <= set(settings.secret_values())
    assert "UTC" not in settings.secret_values()
