"""Fallback models: when a model cannot answer at all, the next one in the list does.

Only before the caller has seen anything of an attempt: once an event of a model call has been
passed on (text may already be on the client's screen), a failure ends the call as it is.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from app.services.llm.base import (
    ChatMessage,
    LLMError,
    LLMErrorKind,
    LLMEvent,
    LLMProvider,
    StatusListener,
    ToolDefinition,
)

log = logging.getLogger(__name__)


def moves_to_next_model(error: LLMError) -> bool:
    """Retired or unknown model, rate limits past the SDK's retries, or a 5xx of the upstream."""
    if error.kind is LLMErrorKind.MODEL_NOT_FOUND:
        return True
    status = error.upstream_status
    return status is not None and (status == 429 or status >= 500)


def _distinct(models: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(model for model in models if model))


class FallbackProvider:
    """Wraps a provider; tries the asked model, then each fallback model in order."""

    def __init__(self, inner: LLMProvider, *, fallback_models: Sequence[str]) -> None:
        self._inner = inner
        self._fallbacks = list(fallback_models)

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def fallback_models(self) -> list[str]:
        """The models tried, in order, after the one asked for."""
        return list(self._fallbacks)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        model: str | None = None,
        on_status: StatusListener | None = None,
    ) -> AsyncGenerator[LLMEvent, None]:
        chain = _distinct([model or self._inner.model, *self._fallbacks])
        for attempt, chosen in enumerate(chain, start=1):
            passed_on = False
            try:
                call = self._inner.stream(messages, tools=tools, model=chosen, on_status=on_status)
                async with aclosing(call) as events:
                    async for event in events:
                        passed_on = True
                        yield event
                return
            except LLMError as e:
                if passed_on or attempt == len(chain) or not moves_to_next_model(e):
                    raise
                log.warning(
                    "model %s cannot answer (%s); falling back to %s",
                    chosen,
                    e.message,
                    chain[attempt],
                )
