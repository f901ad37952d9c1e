"""OpenTelemetry traces of the server's work, named and described by the GenAI semantic conventions.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: then the
SDK is never imported, every seam gets the API's no-op tracer, and nothing is recorded. On: a
`TracerProvider` of this runtime's own (never the process-global one, so several apps in one
process keep apart), exporting OTLP over HTTP in batches from the SDK's thread, flushed and shut
down with the runtime. Never a span or an event per streamed token.

Each response is a trace of its own (`invoke_agent`), linked to the connection that asked for it:
a WebSocket connection can last hours, a turn is what a team looks at. Its children: one
`chat <model>` span per model request (time to first token as an event), one
`execute_tool <name>` per tool call. Store batches and summary/title jobs are their own traces,
linked to the spans whose work they carry. Prompt and answer text only with
`OTEL_CAPTURE_CONTENT=true`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import db_attributes as db
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.attributes.enduser_attributes import ENDUSER_ID
from opentelemetry.semconv._incubating.attributes.mcp_attributes import (
    MCP_METHOD_NAME,
    MCP_SESSION_ID,
    McpMethodNameValues,
)
from opentelemetry.semconv._incubating.attributes.session_attributes import SESSION_ID
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_PATH
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import JsonValue

from app.services.llm.base import (
    ChatMessage,
    Finished,
    LLMError,
    LLMEvent,
    LLMProvider,
    StatusListener,
    TextDelta,
    ToolCallRequest,
    ToolDefinition,
)
from app.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from app.protocol import AssistantMessageEvent, StoredEvent

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "app"
DEFAULT_SERVICE_NAME = "realtime-conversations"
# Our own attributes, where the conventions have none.
RESPONSE_STATUS = "conversation.response.status"
CONNECTION_RESUMED = "conversation.resumed"
JOB_KIND = "conversation.job.kind"
JOB_OUTCOME = "conversation.job.outcome"
BATCH_SESSION_IDS = "conversation.session_ids"
FIRST_CHUNK_EVENT = "first_token"
STORE_RETRY_EVENT = "store_retry"
# A batch of many sessions links to at most this many spans (and names as many sessions).
_MAX_BATCH_LINKS = 32
_CHAT = gen_ai.GenAiOperationNameValues.CHAT.value
_EXECUTE_TOOL = gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value
_INVOKE_AGENT = gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value

Attributes = dict[str, str | bool | int | float | Sequence[str]]


@dataclass(frozen=True, slots=True)
class McpOrigin:
    """Where an MCP tool runs, for its `execute_tool` span (the MCP tools' adapter fills it in)."""

    server_address: str
    server_port: int | None = None
    session_id: str | None = None


def _who(session_id: str | None, owner: str | None) -> Attributes:
    attributes: Attributes = {}
    if session_id is not None:
        attributes[SESSION_ID] = session_id
    if owner is not None:
        attributes[ENDUSER_ID] = owner
    return attributes


def _json(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


def _text_messages(role: str, text: str, finish_reason: str | None = None) -> str:
    """One message in the conventions' structured form (`gen_ai.input/output.messages`)."""
    message: dict[str, object] = {"role": role, "parts": [{"type": "text", "content": text}]}
    if finish_reason is not None:
        message["finish_reason"] = finish_reason
    return _json([message])


def _chat_messages(messages: Sequence[ChatMessage]) -> str:
    return _json([_chat_message(message) for message in messages])


def _chat_message(message: ChatMessage) -> dict[str, object]:
    """A request message in the conventions' form: role and typed parts."""
    parts: list[dict[str, object]] = []
    if message["content"]:
        parts.append({"type": "text", "content": message["content"]})
    if message["role"] == "assistant":
        for call in message.get("tool_calls", []):
            function = call["function"]
            parts.append(
                {
                    "type": "tool_call",
                    "id": call["id"],
                    "name": function["name"],
                    "arguments": function["arguments"],
                }
            )
    elif message["role"] == "tool":
        parts = [{"type": "tool_call_response", "id": message["tool_call_id"], "response": parts}]
    return {"role": message["role"], "parts": parts}


def _tokens(usage: dict[str, JsonValue] | None) -> Attributes:
    """Input and output tokens from an OpenAI-style usage object."""
    attributes: Attributes = {}
    if usage is None:
        return attributes
    for key, names in (
        (gen_ai.GEN_AI_USAGE_INPUT_TOKENS, ("prompt_tokens", "input_tokens")),
        (gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, ("completion_tokens", "output_tokens")),
    ):
        for name in names:
            value = usage.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                attributes[key] = value
                break
    return attributes


def _current_link() -> list[Link]:
    context = trace.get_current_span().get_span_context()
    return [Link(context)] if context.is_valid else []


class ResponseSpan:
    """The `invoke_agent` span of one response, told how the response ended."""

    def __init__(self, span: Span, *, capture_content: bool) -> None:
        self._span = span
        self._capture_content = capture_content

    def finished(self, message: AssistantMessageEvent, events: Sequence[StoredEvent]) -> None:
        span = self._span
        if not span.is_recording():
            return
        span.set_attributes(
            {
                RESPONSE_STATUS: message.status.value,
                gen_ai.GEN_AI_RESPONSE_FINISH_REASONS: [message.finish_reason],
                gen_ai.GEN_AI_RESPONSE_MODEL: message.model,
                **_tokens(message.usage),
            }
        )
        if message.error is not None:
            span.set_attribute(ERROR_TYPE, message.error.code.value)
            span.set_status(Status(StatusCode.ERROR, message.error.message))
        if self._capture_content:
            question = next((e for e in reversed(events) if e.type == "user.message"), None)
            if question is not None and question.type == "user.message":
                span.set_attribute(
                    gen_ai.GEN_AI_INPUT_MESSAGES, _text_messages("user", question.text)
                )
            output = _text_messages("assistant", message.text, message.finish_reason)
            span.set_attribute(gen_ai.GEN_AI_OUTPUT_MESSAGES, output)


class ToolSpan:
    """The `execute_tool` span of one call, told its outcome."""

    def __init__(self, span: Span, *, capture_content: bool) -> None:
        self._span = span
        self._capture_content = capture_content

    def finished(self, *, result: JsonValue, error: str | None) -> None:
        span = self._span
        if not span.is_recording():
            return
        if error is not None:
            span.set_attribute(ERROR_TYPE, "tool_error")
            span.set_status(Status(StatusCode.ERROR, error))
        elif self._capture_content:
            span.set_attribute(gen_ai.GEN_AI_TOOL_CALL_RESULT, _json(result))


class JobSpan:
    """The span of one summary or title job, told its owner (once read) and outcome."""

    def __init__(self, span: Span) -> None:
        self._span = span

    def owner(self, owner: str | None) -> None:
        if owner is not None:
            self._span.set_attribute(ENDUSER_ID, owner)

    def outcome(self, outcome: str | None) -> None:
        self._span.set_attribute(JOB_OUTCOME, outcome or "not_claimed")


class ConnectionSpan:
    """The span of one WebSocket connection, told its session once it is attached."""

    def __init__(self, span: Span) -> None:
        self._span = span

    def attached(self, *, session_id: str, owner: str | None, resumed: bool) -> None:
        self._span.set_attributes({**_who(session_id, owner), CONNECTION_RESUMED: resumed})

    def refused(self, code: str) -> None:
        self._span.set_attribute(ERROR_TYPE, code)


class HttpSpan:
    """The span of one REST request, named for its route once routing found it."""

    def __init__(self, span: Span, method: str) -> None:
        self._span = span
        self._method = method

    def finished(self, *, route: str | None, session_id: str | None, status: int) -> None:
        if route is not None:
            self._span.update_name(f"{self._method} {route}")
            self._span.set_attribute(HTTP_ROUTE, route)
        if session_id is not None:
            self._span.set_attribute(SESSION_ID, session_id)
        self._span.set_attribute(HTTP_RESPONSE_STATUS_CODE, status)
        if status >= 500:
            self._span.set_attribute(ERROR_TYPE, str(status))
            self._span.set_status(Status(StatusCode.ERROR))


class Tracing:
    """The server's spans; with the no-op tracer (tracing off) every method costs next to
    nothing and records nothing."""

    def __init__(
        self,
        tracer: trace.Tracer,
        *,
        capture_content: bool = False,
        db_system: str = "other_sql",
        provider: TracerProvider | None = None,
    ) -> None:
        self._tracer = tracer
        self._provider = provider
        self._db_system = db_system
        self.capture_content = capture_content

    @classmethod
    def disabled(cls) -> Tracing:
        return cls(trace.NoOpTracer())

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    def shutdown(self) -> None:
        """Export what is left and stop the exporter (blocking: call it in a thread)."""
        if self._provider is not None:
            self._provider.shutdown()

    # -- transport -------------------------------------------------------------------------

    @contextmanager
    def connection(self, headers: Mapping[str, str]) -> Iterator[ConnectionSpan]:
        """A WebSocket connection, from accept to close: current while it lives, so what it
        starts can link to it. A `traceparent` header makes it part of the caller's trace."""
        with self._tracer.start_as_current_span(
            "websocket /ws",
            kind=SpanKind.SERVER,
            context=self._caller(headers),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield ConnectionSpan(span)

    @contextmanager
    def http_request(
        self, method: str, path: str, headers: Mapping[str, str]
    ) -> Iterator[HttpSpan]:
        """A REST request, in the caller's trace when it sent a `traceparent` header."""
        attributes: Attributes = {HTTP_REQUEST_METHOD: method, URL_PATH: path}
        with self._tracer.start_as_current_span(
            method,
            kind=SpanKind.SERVER,
            context=self._caller(headers),
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield HttpSpan(span, method)

    def _caller(self, headers: Mapping[str, str]) -> otel_context.Context:
        if "traceparent" not in headers:
            return otel_context.Context()
        return TraceContextTextMapPropagator().extract(headers, context=otel_context.Context())

    def note_owner(self, owner: str | None) -> None:
        """The current span (a REST request's, a job's) belongs to `owner`."""
        if owner is not None:
            trace.get_current_span().set_attribute(ENDUSER_ID, owner)

    # -- a response ------------------------------------------------------------------------

    @contextmanager
    def response(
        self, *, session_id: str, owner: str | None, response_id: str, model: str
    ) -> Iterator[ResponseSpan]:
        """One response: a new trace, linked to the connection it runs for; current while it
        runs, so model requests and tool calls are its children."""
        attributes: Attributes = {
            gen_ai.GEN_AI_OPERATION_NAME: _INVOKE_AGENT,
            gen_ai.GEN_AI_CONVERSATION_ID: session_id,
            gen_ai.GEN_AI_RESPONSE_ID: response_id,
            gen_ai.GEN_AI_REQUEST_MODEL: model,
            **_who(session_id, owner),
        }
        with self._tracer.start_as_current_span(
            _INVOKE_AGENT,
            context=otel_context.Context(),
            links=_current_link(),
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield ResponseSpan(span, capture_content=self.capture_content)

    @contextmanager
    def tool_call(
        self,
        *,
        name: str,
        call_id: str,
        arguments: dict[str, JsonValue],
        session_id: str,
        owner: str | None,
        mcp: McpOrigin | None = None,
    ) -> Iterator[ToolSpan]:
        """One tool call (`mcp`: the MCP server it runs on, for tools that come from one)."""
        attributes: Attributes = {
            gen_ai.GEN_AI_OPERATION_NAME: _EXECUTE_TOOL,
            gen_ai.GEN_AI_TOOL_NAME: name,
            gen_ai.GEN_AI_TOOL_CALL_ID: call_id,
            gen_ai.GEN_AI_TOOL_TYPE: "function",
            gen_ai.GEN_AI_CONVERSATION_ID: session_id,
            **_who(session_id, owner),
            **_mcp_attributes(mcp),
        }
        if self.capture_content:
            attributes[gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS] = _json(arguments)
        with self._span(f"{_EXECUTE_TOOL} {name}", attributes) as span:
            yield ToolSpan(span, capture_content=self.capture_content)

    def traced_provider(self, provider: LLMProvider, *, provider_name: str) -> LLMProvider:
        """`provider` with a `chat <model>` span per request; itself when tracing is off."""
        if not self.enabled:
            return provider
        return TracedProvider(provider, self, provider_name=provider_name)

    def start_chat(
        self, *, model: str, provider_name: str, messages: Sequence[ChatMessage]
    ) -> ChatSpan:
        attributes: Attributes = {
            gen_ai.GEN_AI_OPERATION_NAME: _CHAT,
            gen_ai.GEN_AI_PROVIDER_NAME: provider_name,
            gen_ai.GEN_AI_REQUEST_MODEL: model,
            gen_ai.GEN_AI_REQUEST_STREAM: True,
        }
        if self.capture_content:
            attributes[gen_ai.GEN_AI_INPUT_MESSAGES] = _chat_messages(messages)
        # Not made current: it ends in another `__anext__` of the stream than the one that
        # started it, and nothing of ours runs beneath it.
        span = self._tracer.start_span(
            f"{_CHAT} {model}", kind=SpanKind.CLIENT, attributes=attributes
        )
        return ChatSpan(span, capture_content=self.capture_content)

    # -- background work -------------------------------------------------------------------

    def origin(self) -> SpanContext | None:
        """The span whose work is being queued now (for the store batch that writes it)."""
        if self._provider is None:
            return None
        context = trace.get_current_span().get_span_context()
        return context if context.is_valid else None

    @contextmanager
    def store_batch(
        self,
        *,
        session_ids: Iterable[str],
        origins: Iterable[SpanContext | None],
        size: int,
    ) -> Iterator[Span]:
        """One batch write of events: a trace of its own, linked to the spans that queued it."""
        sessions = sorted(set(session_ids))[:_MAX_BATCH_LINKS]
        attributes: Attributes = {
            db.DB_SYSTEM_NAME: self._db_system,
            db.DB_OPERATION_NAME: "append",
            db.DB_COLLECTION_NAME: "events",
            db.DB_OPERATION_BATCH_SIZE: size,
            BATCH_SESSION_IDS: sessions,
        }
        if len(sessions) == 1:
            attributes[SESSION_ID] = sessions[0]
        distinct = {(o.trace_id, o.span_id): o for o in origins if o is not None}
        links = [Link(origin) for origin in list(distinct.values())[:_MAX_BATCH_LINKS]]
        with self._span("append events", attributes, links=links, root=True) as span:
            yield span

    def note_retry(self, error: Exception, *, delay_s: float) -> None:
        """The current span's store write failed and is tried again after `delay_s`."""
        trace.get_current_span().add_event(
            STORE_RETRY_EVENT, {ERROR_TYPE: type(error).__name__, "retry.delay_s": delay_s}
        )

    @contextmanager
    def job(self, kind: str, session_id: str) -> Iterator[JobSpan]:
        """A summary or title job: a trace of its own, linked to the span that asked for it."""
        attributes: Attributes = {
            JOB_KIND: kind,
            gen_ai.GEN_AI_CONVERSATION_ID: session_id,
            **_who(session_id, None),
        }
        with self._span(f"{kind} job", attributes, links=_current_link(), root=True) as span:
            yield JobSpan(span)

    @contextmanager
    def _span(
        self,
        name: str,
        attributes: Attributes,
        *,
        links: list[Link] | None = None,
        root: bool = False,
    ) -> Iterator[Span]:
        """A current span whose status says failed for an exception, not for a cancellation."""
        with self._tracer.start_as_current_span(
            name,
            context=otel_context.Context() if root else None,
            links=links,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Exception as e:
                span.set_attribute(ERROR_TYPE, type(e).__name__)
                span.set_status(Status(StatusCode.ERROR, str(e)))
                raise
            except BaseException:
                span.set_attribute(ERROR_TYPE, "cancelled")
                raise


def _mcp_attributes(mcp: McpOrigin | None) -> Attributes:
    if mcp is None:
        return {}
    attributes: Attributes = {
        MCP_METHOD_NAME: McpMethodNameValues.TOOLS_CALL.value,
        SERVER_ADDRESS: mcp.server_address,
    }
    if mcp.server_port is not None:
        attributes[SERVER_PORT] = mcp.server_port
    if mcp.session_id is not None:
        attributes[MCP_SESSION_ID] = mcp.session_id
    return attributes


class ChatSpan:
    """The `chat <model>` span of one model request, fed the request's events."""

    def __init__(self, span: Span, *, capture_content: bool) -> None:
        self._span = span
        self._capture_content = capture_content
        self._started = time.monotonic()
        self._first_seen = False
        self._text: list[str] = []
        self._calls: list[ToolCallRequest] = []

    def saw(self, event: LLMEvent) -> None:
        """Called per event: only the first and the last do anything but a check."""
        if isinstance(event, Finished):
            self._finished(event)
            return
        if not self._first_seen:
            self._first_seen = True
            elapsed = time.monotonic() - self._started
            self._span.add_event(
                FIRST_CHUNK_EVENT, {gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: elapsed}
            )
            self._span.set_attribute(gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, elapsed)
        if self._capture_content:
            if isinstance(event, TextDelta):
                self._text.append(event.text)
            else:
                self._calls.append(event)

    def _finished(self, event: Finished) -> None:
        self._span.set_attributes(
            {
                gen_ai.GEN_AI_RESPONSE_FINISH_REASONS: [event.finish_reason],
                gen_ai.GEN_AI_RESPONSE_MODEL: event.model,
                **_tokens(event.usage),
            }
        )
        if self._capture_content:
            self._span.set_attribute(gen_ai.GEN_AI_OUTPUT_MESSAGES, self._output(event))

    def _output(self, event: Finished) -> str:
        parts: list[dict[str, object]] = []
        if self._text:
            parts.append({"type": "text", "content": "".join(self._text)})
        for call in self._calls:
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
            )
        return _json([{"role": "assistant", "parts": parts, "finish_reason": event.finish_reason}])

    def end(self, error: BaseException | None) -> None:
        if isinstance(error, LLMError):
            self._span.set_attribute(ERROR_TYPE, error.upstream_code or error.code.value)
            self._span.set_status(Status(StatusCode.ERROR, error.message))
        elif isinstance(error, Exception):
            self._span.set_attribute(ERROR_TYPE, type(error).__name__)
            self._span.set_status(Status(StatusCode.ERROR, str(error)))
        elif error is not None:
            self._span.set_attribute(ERROR_TYPE, "cancelled")
        self._span.end()


class TracedProvider:
    """An `LLMProvider` that puts a `chat <model>` span around each request of the one it wraps."""

    def __init__(self, inner: LLMProvider, tracing: Tracing, *, provider_name: str) -> None:
        self._inner = inner
        self._tracing = tracing
        self._provider_name = provider_name

    @property
    def model(self) -> str:
        return self._inner.model

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        model: str | None = None,
        on_status: StatusListener | None = None,
    ) -> AsyncGenerator[LLMEvent, None]:
        span = self._tracing.start_chat(
            model=model or self._inner.model, provider_name=self._provider_name, messages=messages
        )
        error: BaseException | None = None
        try:
            inner = self._inner.stream(messages, tools=tools, model=model, on_status=on_status)
            async with aclosing(inner) as events:
                async for event in events:
                    span.saw(event)
                    yield event
        except BaseException as e:
            error = None if isinstance(e, GeneratorExit) else e
            raise
        finally:
            span.end(error)

    async def aclose(self) -> None:
        await self._inner.aclose()


def provider_name_of(settings: Settings) -> str:
    """`gen_ai.provider.name` of the provider in use (the conventions' value where one exists)."""
    if settings.llm_provider == "openai":
        return gen_ai.GenAiProviderNameValues.OPENAI.value
    if settings.llm_provider == "groq" or (
        settings.llm_provider == "auto" and settings.groq_api_key is not None
    ):
        return gen_ai.GenAiProviderNameValues.GROQ.value
    return "llama_cpp"  # the in-process local model


def start_tracing(settings: Settings, *, exporter: SpanExporter | None = None) -> Tracing:
    """Tracing for a runtime: exported to `exporter` (tests), else over OTLP/HTTP when an
    endpoint is set, else off (the SDK is not even imported)."""
    endpoint = otlp_traces_endpoint(settings)
    if exporter is None and endpoint is None:
        return Tracing.disabled()
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=_resource(settings))
    if exporter is not None:
        # Tests read spans as soon as they end.
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        assert endpoint is not None
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(settings, endpoint)))
        log.info("traces: exporting OTLP over HTTP to %s", endpoint)
    return Tracing(
        provider.get_tracer(INSTRUMENTATION_NAME),
        capture_content=settings.otel_capture_content,
        # Supabase's REST store writes to PostgreSQL too.
        db_system="sqlite" if settings.store_kind() == "sqlite" else "postgresql",
        provider=provider,
    )


def otlp_traces_endpoint(settings: Settings) -> str | None:
    """Where spans go: the traces endpoint as given, or the base endpoint + `/v1/traces`."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    return None


def _otlp_exporter(settings: Settings, endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.util.re import parse_env_headers

    # Given here because `.env` reaches our settings but not the SDK; other OTEL_* variables
    # (timeout, compression, certificates) are read by the SDK from the environment.
    headers = settings.otel_exporter_otlp_headers
    parsed = parse_env_headers(headers.get_secret_value(), liberal=True) if headers else None
    return OTLPSpanExporter(endpoint=endpoint, headers=parsed)


def _resource(settings: Settings) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    # `Resource.create()` reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; OTEL_SERVICE_NAME
    # from `.env` comes through our settings; without either, the server's own name.
    detected = Resource.create()
    name = settings.otel_service_name
    if name is None and str(detected.attributes.get(SERVICE_NAME, "")).startswith(
        "unknown_service"
    ):
        name = DEFAULT_SERVICE_NAME
    return detected.merge(Resource({SERVICE_NAME: name})) if name else detected
