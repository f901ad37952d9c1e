"""LLM providers behind one `LLMProvider` protocol, chosen by `create_provider`."""

from __future__ import annotations

import logging
from pathlib import Path

from app.services.llm.base import LLMProvider
from app.services.llm.fallback import FallbackProvider
from app.services.llm.groq import GroqProvider
from app.services.llm.openai import OpenAIProvider
from app.services.llm.unconfigured import HOW_TO_CONFIGURE_ANY, UnconfiguredProvider
from app.settings import Settings

log = logging.getLogger(__name__)


def create_provider(settings: Settings) -> LLMProvider:
    """The provider LLM_PROVIDER names; `auto` is Groq with a key, else the local model."""
    if settings.llm_provider == "openai":
        return _openai(settings)
    if settings.llm_provider == "local":
        return _local(settings) or UnconfiguredProvider("local", how_to=HOW_TO_CONFIGURE_ANY)
    if settings.llm_provider == "groq" or _has_groq_key(settings):
        return _groq(settings)
    return _local(settings) or UnconfiguredProvider(
        settings.groq_model, how_to=HOW_TO_CONFIGURE_ANY
    )


def summary_model(settings: Settings, provider: LLMProvider) -> str:
    """The model for summaries: SUMMARY_MODEL on Groq; elsewhere the provider's own model,
    unless SUMMARY_MODEL was set explicitly (its default names a Groq model)."""
    if provider.model == settings.groq_model or "summary_model" in settings.model_fields_set:
        return settings.summary_model
    return provider.model


def _has_groq_key(settings: Settings) -> bool:
    return settings.groq_api_key is not None and bool(settings.groq_api_key.get_secret_value())


def _groq(settings: Settings) -> LLMProvider:
    if not _has_groq_key(settings):
        return UnconfiguredProvider(settings.groq_model)
    assert settings.groq_api_key is not None
    groq = GroqProvider(
        api_key=settings.groq_api_key.get_secret_value(),
        base_url=settings.groq_base_url,
        model=settings.groq_model,
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        max_completion_tokens=settings.llm_max_completion_tokens,
    )
    if not settings.groq_fallback_models:
        return groq
    return FallbackProvider(groq, fallback_models=settings.groq_fallback_models)


def _openai(settings: Settings) -> LLMProvider:
    assert settings.openai_model is not None, "settings validation requires OPENAI_MODEL"
    api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return OpenAIProvider(
        base_url=settings.openai_base_url,
        api_key=api_key,
        model=settings.openai_model,
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        max_completion_tokens=settings.llm_max_completion_tokens,
    )


def _local(settings: Settings) -> LLMProvider | None:
    """The in-process model, or None when its packages are not installed."""
    try:
        from app.services.llm import local
    except ImportError as e:  # llama-cpp-python is optional: it needs a compiler to install
        log.warning("the local model is not installed (%s)", e)
        return None
    try:
        path = (
            Path(settings.local_model_path).expanduser()
            if settings.local_model_path
            else local.default_model_path()
        )
    except local.LocalModelMissing as e:
        log.warning("the local model is not installed (%s)", e)
        return None
    return local.LocalProvider(
        model_path=path,
        label=local.model_label(path, default=settings.local_model_path is None),
        max_completion_tokens=settings.llm_max_completion_tokens,
        threads=None,
    )
