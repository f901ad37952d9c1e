"""Which provider the settings choose, and the settings that choose it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import app.services.llm
from app.services.llm import create_provider, summary_model
from app.services.llm.base import LLMError, LLMErrorKind, LLMProvider, ModelRequest, UserPart
from app.services.llm.fallback import FallbackProvider
from app.services.llm.groq import GroqProvider
from app.services.llm.openai import OpenAIProvider
from app.services.llm.unconfigured import UnconfiguredProvider
from app.settings import Settings, SettingsError, load_settings
from tests.services.llm.local_model import require_local_model

MakeSettings = Callable[..., Settings]


async def _chosen(settings: Settings) -> LLMProvider:
    # In a thread, as the app's lifespan does: a client loads its TLS certificates (blocking).
    provider = await asyncio.to_thread(create_provider, settings)
    await provider.aclose()
    return provider


async def _failure_of(provider: LLMProvider) -> LLMError:
    with pytest.raises(LLMError) as caught:
        async for _ in provider.stream([ModelRequest([UserPart("hi")])]):
            pass
    return caught.value


@pytest.fixture
def without_local_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine where requirements-local.txt was never installed (imports fail)."""
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    monkeypatch.setitem(sys.modules, "app.services.llm.local", None)
    monkeypatch.delattr(app.services.llm, "local", raising=False)


async def test_auto_with_a_groq_key_is_groq(make_settings: MakeSettings) -> None:
    provider = await _chosen(make_settings(llm_provider="auto"))
    assert isinstance(provider, GroqProvider)
    assert provider.model == "test-model"


async def test_auto_without_a_key_is_the_small_offline_model(make_settings: MakeSettings) -> None:
    require_local_model()
    provider = await _chosen(make_settings(llm_provider="auto", groq_api_key=None))
    assert type(provider).__name__ == "LocalProvider"
    assert provider.model == "local:SmolLM2-135M-Instruct (small offline model)"


@pytest.mark.usefixtures("without_local_packages")
async def test_auto_without_key_or_local_packages_says_how_to_get_either(
    make_settings: MakeSettings,
) -> None:
    provider = await _chosen(make_settings(llm_provider="auto", groq_api_key=None))
    assert isinstance(provider, UnconfiguredProvider)
    error = await _failure_of(provider)
    assert error.kind is LLMErrorKind.UNAVAILABLE
    assert "GROQ_API_KEY" in error.message
    assert "requirements-local.txt" in error.message


async def test_groq_without_a_key_explains_the_key(make_settings: MakeSettings) -> None:
    provider = await _chosen(make_settings(llm_provider="groq", groq_api_key=None))
    assert isinstance(provider, UnconfiguredProvider)
    assert "GROQ_API_KEY" in (await _failure_of(provider)).message


async def test_fallback_models_wrap_groq(make_settings: MakeSettings) -> None:
    provider = await _chosen(make_settings(groq_fallback_models="a, b,,"))
    assert isinstance(provider, FallbackProvider)
    assert provider.fallback_models == ["a", "b"]
    assert provider.model == "test-model"


async def test_openai_provider_and_its_summary_model(make_settings: MakeSettings) -> None:
    settings = make_settings(llm_provider="openai", openai_model="llama3.2")
    provider = await _chosen(settings)
    assert isinstance(provider, OpenAIProvider)
    assert provider.model == "llama3.2"
    # An explicit SUMMARY_MODEL is kept whatever the provider.
    assert summary_model(settings, provider) == "background-summary-model"


def _env_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    for name in ("LLM_PROVIDER", "GROQ_API_KEY", "OPENAI_MODEL", "SUMMARY_MODEL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


async def test_default_summary_model_follows_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    # SUMMARY_MODEL's default names a Groq model: other providers summarize with their own.
    settings = _env_settings(monkeypatch, LLM_PROVIDER="openai", OPENAI_MODEL="qwen3:8b")
    assert summary_model(settings, await _chosen(settings)) == "qwen3:8b"
    groq_settings = _env_settings(monkeypatch, LLM_PROVIDER="groq", GROQ_API_KEY="k")
    assert summary_model(groq_settings, await _chosen(groq_settings)) == "openai/gpt-oss-20b"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LLM_PROVIDER": "openai"}, "OPENAI_MODEL"),
        ({"LLM_PROVIDER": "remote"}, "LLM_PROVIDER"),
        ({"LOCAL_MODEL_PATH": "missing.gguf"}, "LOCAL_MODEL_PATH"),
    ],
)
def test_wrong_model_settings_stop_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        _env_settings(monkeypatch, **env)


def test_fallback_models_come_from_a_comma_separated_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _env_settings(monkeypatch, GROQ_FALLBACK_MODELS="openai/gpt-oss-20b, qwen/qwen3-32b")
    assert settings.groq_fallback_models == ["openai/gpt-oss-20b", "qwen/qwen3-32b"]
    assert settings.llm_provider == "auto"
