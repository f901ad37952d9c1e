"""Any OpenAI-compatible server (OpenAI, Ollama, vLLM, llama.cpp's server): the chat-completions
adapter with OpenAI's error map, sent through the `openai` SDK."""

from __future__ import annotations

from typing import Any, cast

import httpx
import openai

from app.services.llm.base import LLMErrorKind
from app.services.llm.chat_completions import ChatCompletionsProvider
from app.services.llm.chat_wire import error_details
from app.services.llm.vendor import ErrorAnswer, Unreachable, Vendor

# Local servers (Ollama, llama.cpp, vLLM) ignore the key, but the SDK insists on one.
PLACEHOLDER_API_KEY = "not-needed"
# The SDK's own default limits.
CONNECTION_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
CHAT_COMPLETIONS_PATH = "/chat/completions"  # under the base URL, which ends in `/v1`

OPENAI_COMPATIBLE = Vendor(
    label="the OpenAI-compatible server",
    key_setting="OPENAI_API_KEY",
    codes={
        "context_length_exceeded": LLMErrorKind.CONTEXT_TOO_LONG,
        "model_not_found": LLMErrorKind.MODEL_NOT_FOUND,
    },
    statuses={401: LLMErrorKind.UNAUTHORIZED, 429: LLMErrorKind.RATE_LIMITED},
    unreachable_hint=" (check OPENAI_BASE_URL)",
    # Usage comes in a last chunk of its own only when asked for.
    extra_body={"stream_options": {"include_usage": True}},
)


class OpenAISender:
    """Sends through `openai.AsyncOpenAI`'s low-level `post`, with a body we built.

    The SDK earns its place here and only here: it retries 408/409/429/5xx and connection
    errors before any output (`LLM_MAX_RETRIES`, backoff, `retry-after`), and raises typed
    errors for error answers. Its request and chunk models are what we skip. It is given an
    `httpx` client (its default is `httpx2`'s): the adapter reads every vendor's body, and
    its failures mid-stream, through one HTTP library.
    """

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        timeout_s: float,
        max_retries: int,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        # `read` bounds the gap between two chunks: a stalled stream fails, not hangs.
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        client = http_client or httpx.AsyncClient(
            timeout=timeout, limits=CONNECTION_LIMITS, follow_redirects=True
        )
        self._client = openai.AsyncOpenAI(
            api_key=api_key or PLACEHOLDER_API_KEY,
            base_url=base_url,
            timeout=openai.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            max_retries=max_retries,
            # Typed as `httpx2`'s client only; an `httpx` one is taken as well (its
            # `is_legacy_httpx_async_client`), requests and errors alike.
            http_client=cast(Any, client),
        )

    async def send(self, body: bytes) -> httpx.Response:
        try:
            return await self._client.post(
                CHAT_COMPLETIONS_PATH, cast_to=httpx.Response, content=body, stream=True
            )
        except openai.APIStatusError as e:
            retry_after = e.response.headers.get("retry-after")
            raise ErrorAnswer(e.status_code, error_details(e.body), retry_after=retry_after) from e
        except openai.APIConnectionError as e:  # its timeout too
            raise Unreachable(str(e)) from e
        except openai.OpenAIError as e:  # anything else the SDK may raise: an error, not a bug
            raise ErrorAnswer(None, {"message": repr(e)}) from e

    async def aclose(self) -> None:
        await self._client.close()


class OpenAIProvider(ChatCompletionsProvider):
    """`LLMProvider` for the chat completions of any OpenAI-compatible server, streamed."""

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str | None,
        model: str,
        timeout_s: float,
        max_retries: int,
        max_completion_tokens: int,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        sender = OpenAISender(
            base_url=base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            http_client=http_client,
        )
        super().__init__(
            vendor=OPENAI_COMPATIBLE,
            sender=sender,
            model=model,
            max_completion_tokens=max_completion_tokens,
        )
