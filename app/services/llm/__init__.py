"""LLM providers behind one `LLMProvider` protocol, chosen by `create_provider`."""

from __future__ import annotations

from app.services.llm.base import LLMProvider
from app.services.llm.groq import GroqProvider
from app.services.llm.unconfigured import UnconfiguredProvider
from app.settings import Settings


def create_provider(settings: Settings) -> LLMProvider:
    """Groq when a key is set; otherwise a provider that explains how to configure one."""
    if settings.groq_api_key is None or not settings.groq_api_key.get_secret_value():
        return UnconfiguredProvider(settings.groq_model)
    return GroqProvider(
        api_key=settings.groq_api_key.get_secret_value(),
        base_url=settings.groq_base_url,
        model=settings.groq_model,
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        max_completion_tokens=settings.llm_max_completion_tokens,
    )
