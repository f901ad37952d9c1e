"""Groq: the chat-completions adapter with Groq's error map, sent through Groq's SDK."""

from __future__ import annotations

import groq
import httpx

from app.services.llm.base import LLMErrorKind
from app.services.llm.chat_completions import ChatCompletionsProvider
from app.services.llm.chat_wire import error_details
from app.services.llm.vendor import TOOL_USE_FAILED, ErrorAnswer, Unreachable, Vendor

CHAT_COMPLETIONS_PATH = "/openai/v1/chat/completions"

GROQ = Vendor(
    label="Groq",
    key_setting="GROQ_API_KEY",
    codes={
        "context_length_exceeded": LLMErrorKind.CONTEXT_TOO_LONG,
        "model_decommissioned": LLMErrorKind.MODEL_NOT_FOUND,
        "model_not_found": LLMErrorKind.MODEL_NOT_FOUND,
        # A model's tool call Groq could not parse; run when `failed_generation` is a call.
        TOOL_USE_FAILED: LLMErrorKind.REFUSED,
    },
    statuses={
        401: LLMErrorKind.UNAUTHORIZED,
        413: LLMErrorKind.RATE_LIMITED,  # capacity, as 498
        429: LLMErrorKind.RATE_LIMITED,
        498: LLMErrorKind.RATE_LIMITED,  # flex tier: no capacity now
    },
    groq_extensions=True,
    recovers_failed_generation=True,
)


class GroqSender:
    """Sends through `groq.AsyncGroq`'s low-level `post`, with a body we built.

    The SDK earns its place here and only here: it retries 408/409/429/5xx and connection
    errors before any output (`LLM_MAX_RETRIES`, backoff, `retry-after`), and raises typed
    errors for error answers. Its request models (`chat.completions.create` transforms every
    message field by field) and its chunk models are what we skip.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        timeout_s: float,
        max_retries: int,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        # `timeout.read` bounds the gap between two chunks: a stalled stream fails, not hangs.
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        # `http_client`: a transport of one's own (the request-building bench); else the SDK's.
        self._client = groq.AsyncGroq(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
        )

    async def send(self, body: bytes) -> httpx.Response:
        try:
            return await self._client.post(
                CHAT_COMPLETIONS_PATH, cast_to=httpx.Response, content=body, stream=True
            )
        except groq.APIStatusError as e:
            retry_after = e.response.headers.get("retry-after")
            raise ErrorAnswer(e.status_code, error_details(e.body), retry_after=retry_after) from e
        except groq.APIConnectionError as e:  # its timeout too
            raise Unreachable(str(e)) from e
        except groq.GroqError as e:  # anything else the SDK may raise: an error, not a bug
            raise ErrorAnswer(None, {"message": repr(e)}) from e

    async def aclose(self) -> None:
        await self._client.close()


class GroqProvider(ChatCompletionsProvider):
    """`LLMProvider` for Groq's chat completions, streamed."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str,
        timeout_s: float,
        max_retries: int,
        max_completion_tokens: int,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        sender = GroqSender(
            api_key=api_key,
            base_url=base_url,
            timeout_s=timeout_s,
            max_retries=max_retries,
            http_client=http_client,
        )
        super().__init__(
            vendor=GROQ, sender=sender, model=model, max_completion_tokens=max_completion_tokens
        )
