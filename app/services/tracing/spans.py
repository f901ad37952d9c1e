"""The server's spans, named and described by the GenAI semantic conventions of the installed
`opentelemetry-semantic-conventions` (their constants, not strings of our own).

Each response is a trace of its own (`invoke_agent`), linked to the connection that asked for it:
a WebSocket connection can last hours, a turn is what a team looks at. Its children: a
`chat <model>` span per model request (`chat.py`) and an `execute_tool <name>` span per tool
call. Store batches and summary/title jobs are traces of their own, linked to the spans whose
work they carry. With tracing off every method returns at once: no span, no attribute.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import JsonValue

from app.services.llm.base import LLMProvider
from app.services.tracing.attributes import (
    BATCH_SESSION_IDS,
    CONNECTION_RESUMED,
    JOB_KIND,
    JOB_OUTCOME,
    RESPONSE_STATUS,
    Attributes,
    as_json,
    subject,
    text_messages,
    tokens,
    who,
)
from app.services.tracing.chat import TracedProvider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from app.protocol import AssistantMessageEvent, StoredEvent

STORE_RETRY_EVENT = "store_retry"
# A batch of many sessions links to at most this many spans (and names as many sessions).
_MAX_BATCH_LINKS = 32
_EXECUTE_TOOL = gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value
_INVOKE_AGENT = gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value


@dataclass(frozen=True, slots=True)
class McpOrigin:
    """Where an MCP tool runs, for its `execute_tool` span (the MCP tools' adapter fills it in)."""

    server_address: str
    server_port: int | None = None
    session_id: str | None = None


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
                **tokens(message.usage),
            }
        )
        if message.error is not None:
            span.set_attribute(ERROR_TYPE, message.error.code.value)
            span.set_status(Status(StatusCode.ERROR, message.error.message))
        if self._capture_content:
            question = next((e for e in reversed(events) if e.type == "user.message"), None)
            if question is not None and question.type == "user.message":
                span.set_attribute(
                    gen_ai.GEN_AI_INPUT_MESSAGES, text_messages("user", question.text)
                )
            output = text_messages("assistant", message.text, message.finish_reason)
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
            span.set_attribute(gen_ai.GEN_AI_TOOL_CALL_RESULT, as_json(result))


class JobSpan:
    """The span of one summary or title job, told its outcome."""

    def __init__(self, span: Span) -> None:
        self._span = span

    def outcome(self, outcome: str | None) -> None:
        self._span.set_attribute(JOB_OUTCOME, outcome or "not_claimed")


class ConnectionSpan:
    """The span of one WebSocket connection, told its session once it is attached."""

    def __init__(self, span: Span) -> None:
        self._span = span

    def attached(self, *, session_id: str, owner: str | None, resumed: bool) -> None:
        if not self._span.is_recording():
            return
        self._span.set_attributes({**who(session_id, owner), CONNECTION_RESUMED: resumed})
        # For the rest of the handler's task and every task it starts from now on.
        subject.set((session_id, owner))

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


# What every method hands out while tracing is off: records nothing.
_OFF = INVALID_SPAN


class Tracing:
    """The server's spans. Off (`disabled()`), every method returns at once with a span that
    records nothing: no SDK, no attributes built, nothing per token ever."""

    def __init__(
        self,
        tracer: trace.Tracer,
        *,
        provider: TracerProvider | None,
        capture_content: bool = False,
        db_system: str = "other_sql",
    ) -> None:
        self._tracer = tracer
        self._provider = provider
        self._db_system = db_system
        self.capture_content = capture_content

    @classmethod
    def disabled(cls) -> Tracing:
        return cls(trace.NoOpTracer(), provider=None)

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    def shutdown(self) -> None:
        """Export what is left and stop the exporter (blocking: call it in a thread)."""
        if self._provider is not None:
            self._provider.shutdown()

    # -- transport -------------------------------------------------------------------------

    @contextmanager
    def connection(
        self, headers: Mapping[str, str], *, path: str = "/ws"
    ) -> Iterator[ConnectionSpan]:
        """A WebSocket connection, from accept to close: current while it lives, so what it
        starts can link to it. A `traceparent` header makes it part of the caller's trace."""
        if not self.enabled:
            yield ConnectionSpan(_OFF)
            return
        name = f"websocket {path}"
        parent = _caller(headers)
        with self._span(name, {}, kind=SpanKind.SERVER, parent=parent) as span:
            yield ConnectionSpan(span)

    @contextmanager
    def http_request(
        self, method: str, path: str, headers: Mapping[str, str]
    ) -> Iterator[HttpSpan]:
        """A REST request, in the caller's trace when it sent a `traceparent` header."""
        if not self.enabled:
            yield HttpSpan(_OFF, method)
            return
        attributes: Attributes = {HTTP_REQUEST_METHOD: method, URL_PATH: path}
        parent = _caller(headers)
        with self._span(method, attributes, kind=SpanKind.SERVER, parent=parent) as span:
            yield HttpSpan(span, method)

    def note_owner(self, owner: str | None) -> None:
        """The current span (a REST request's, a job's) belongs to `owner`."""
        if owner is None or not self.enabled:
            return
        trace.get_current_span().set_attribute(ENDUSER_ID, owner)
        current = subject.get()
        if current is not None:  # a job read its session: what it starts from here knows too
            subject.set((current[0], owner))

    # -- a response ------------------------------------------------------------------------

    @contextmanager
    def response(
        self, *, session_id: str, owner: str | None, response_id: str, model: str
    ) -> Iterator[ResponseSpan]:
        """One response: a new trace, linked to the connection it runs for; current while it
        runs, so its model requests and tool calls are its children."""
        if not self.enabled:
            yield ResponseSpan(_OFF, capture_content=False)
            return
        attributes: Attributes = {
            gen_ai.GEN_AI_OPERATION_NAME: _INVOKE_AGENT,
            gen_ai.GEN_AI_CONVERSATION_ID: session_id,
            gen_ai.GEN_AI_RESPONSE_ID: response_id,
            gen_ai.GEN_AI_REQUEST_MODEL: model,
            **who(session_id, owner),
        }
        # Its status says how the response ended (`ResponseSpan.finished`), not an exception.
        links = _current_link()
        token = subject.set((session_id, owner))
        try:
            with self._span(
                _INVOKE_AGENT, attributes, links=links, parent=otel_context.Context()
            ) as span:
                yield ResponseSpan(span, capture_content=self.capture_content)
        finally:
            subject.reset(token)

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
        """One tool call (`mcp`: the MCP server it runs on, for a tool that comes from one)."""
        if not self.enabled:
            yield ToolSpan(_OFF, capture_content=False)
            return
        attributes: Attributes = {
            gen_ai.GEN_AI_OPERATION_NAME: _EXECUTE_TOOL,
            gen_ai.GEN_AI_TOOL_NAME: name,
            gen_ai.GEN_AI_TOOL_CALL_ID: call_id,
            gen_ai.GEN_AI_TOOL_TYPE: "function",
            gen_ai.GEN_AI_CONVERSATION_ID: session_id,
            **who(session_id, owner),
            **_mcp_attributes(mcp),
        }
        if self.capture_content:
            attributes[gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS] = as_json(arguments)
        with self._span(f"{_EXECUTE_TOOL} {name}", attributes) as span:
            yield ToolSpan(span, capture_content=self.capture_content)

    def traced_provider(self, provider: LLMProvider, *, provider_name: str) -> LLMProvider:
        """`provider` with a `chat <model>` span per request; itself when tracing is off."""
        if not self.enabled:
            return provider
        return TracedProvider(
            provider,
            self._tracer,
            provider_name=provider_name,
            capture_content=self.capture_content,
        )

    # -- background work -------------------------------------------------------------------

    def origin(self) -> SpanContext | None:
        """The span whose work is being queued now (the store batch that writes it links it)."""
        if not self.enabled:
            return None
        context = trace.get_current_span().get_span_context()
        return context if context.is_valid else None

    @contextmanager
    def store_batch(
        self, *, session_ids: Iterable[str], origins: Iterable[SpanContext | None], size: int
    ) -> Iterator[Span]:
        """One batch write of events: a trace of its own, linked to the spans that queued it."""
        if not self.enabled:
            yield _OFF
            return
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
        root = otel_context.Context()
        with self._span("append events", attributes, links=links, parent=root) as span:
            yield span

    def note_retry(self, error: Exception, *, delay_s: float) -> None:
        """The current span's store write failed and is tried again after `delay_s`."""
        if self.enabled:
            attributes: Attributes = {ERROR_TYPE: type(error).__name__, "retry.delay_s": delay_s}
            trace.get_current_span().add_event(STORE_RETRY_EVENT, attributes)

    @contextmanager
    def job(self, kind: str, session_id: str) -> Iterator[JobSpan]:
        """A summary or title job: a trace of its own, linked to the span that asked for it."""
        if not self.enabled:
            yield JobSpan(_OFF)
            return
        # Asked for by the session's connection (or response), the job knows its owner.
        asker = subject.get()
        owner = asker[1] if asker is not None and asker[0] == session_id else None
        attributes: Attributes = {
            JOB_KIND: kind,
            gen_ai.GEN_AI_CONVERSATION_ID: session_id,
            **who(session_id, owner),
        }
        links = _current_link()
        root = otel_context.Context()
        token = subject.set((session_id, owner))
        try:
            with self._span(f"{kind} job", attributes, links=links, parent=root) as span:
                yield JobSpan(span)
        finally:
            subject.reset(token)

    @contextmanager
    def _span(
        self,
        name: str,
        attributes: Attributes,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        parent: otel_context.Context | None = None,
        links: list[Link] | None = None,
    ) -> Iterator[Span]:
        """A current span (a child of the current one unless `parent` is given) that an
        exception fails and a cancellation only marks."""
        with self._tracer.start_as_current_span(
            name,
            context=parent,
            kind=kind,
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


def _caller(headers: Mapping[str, str]) -> otel_context.Context:
    """The caller's trace context from a `traceparent` header; else a new trace."""
    if "traceparent" not in headers:
        return otel_context.Context()
    return TraceContextTextMapPropagator().extract(headers, context=otel_context.Context())


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
