"""One response: stream the model, run its tools round by round, end in one `response.done`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import assert_never

from pydantic import JsonValue

from app.logs import response_id_var
from app.protocol import (
    FINISH_AWAITING_APPROVAL,
    AssistantMessageEvent,
    ErrorCode,
    ErrorInfo,
    ResponseDelta,
    ResponseStarted,
    ResponseStatus,
    ResponseWaiting,
    StoredEvent,
    ToolApprovalRequestedEvent,
    ToolCallEvent,
    ToolResultEvent,
)
from app.services.approvals import ApprovalDesk, Decision, ResumedRound
from app.services.llm.base import (
    ChatMessage,
    Finished,
    LLMError,
    LLMErrorKind,
    LLMEvent,
    LLMProvider,
    ModelStatus,
    TextDelta,
    ToolCallRequest,
    ToolDefinition,
)
from app.services.mcp.source import mcp_origin
from app.services.metrics import Metrics
from app.services.response_parts import (
    LLM_ERROR_CODES,
    RESPONSE_TRANSITIONS,
    PromptSource,
    PromptTooLong,
    ResponseConfig,
    ResponseOutput,
    ResponseProgress,
    ResponseState,
    ToolRoundsExceeded,
    add_usage,
    done_frame,
    parse_arguments,
    storable_object,
)
from app.services.states import check_transition
from app.services.storable import storable_json, storable_text
from app.services.tools import ToolContext, ToolError, ToolRegistry
from app.services.tracing import ResponseSpan, Tracing

log = logging.getLogger(__name__)

# What the conversation and the runtime use with a runner (defined in response_parts.py).
__all__ = [
    "PromptSource",
    "ResponseConfig",
    "ResponseOutput",
    "ResponseRunner",
    "ResponseState",
    "done_frame",
]


def _now() -> datetime:
    return datetime.now(UTC)


class ResponseRunner:
    """Runs one response of a conversation to its single end.

    The model rounds run in a child task, so `cancel()` interrupts them while this runner
    still closes the response: cancelled tool results, the stored assistant message, the done frame.
    """

    def __init__(
        self,
        output: ResponseOutput,
        *,
        prompt: PromptSource,
        session_id: str,
        history: Sequence[StoredEvent],
        response_id: str,
        provider: LLMProvider,
        tools: ToolRegistry,
        tool_context: ToolContext,
        config: ResponseConfig,
        metrics: Metrics,
        tracing: Tracing,
        owner: str | None,
        approvals: ApprovalDesk,
        supersedes: str | None = None,
        resumed: ResumedRound | None = None,
    ) -> None:
        self.response_id = response_id
        # The earlier response this one replaces (a regenerate), stored with its answer.
        self.supersedes = supersedes
        self._out = output
        self._prompt = prompt
        self._session_id = session_id
        # The session's events, as they grow (the traced question is the last user message).
        self._history = history
        self._provider = provider
        self._tools = tools
        self._tool_context = tool_context
        self._config = config
        self._metrics = metrics
        self._tracing = tracing
        self._owner = owner
        self._span: ResponseSpan | None = None
        self._progress = ResponseProgress(model=provider.model)
        self._approvals = approvals
        # A round left waiting for approval by a stopped process, which this response runs.
        self._resumed = resumed
        if resumed is not None:
            self._progress.open_calls = {call.call_id: call for call in resumed.calls}
        # A shutdown came while calls waited for approval: they stay pending in the log.
        self._paused = False
        self._work: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self.state = ResponseState.STARTING
        # How it ended, once it has.
        self.status: ResponseStatus | None = None

    @property
    def completed(self) -> bool:
        return self.status is ResponseStatus.COMPLETED

    def _move(self, new: ResponseState) -> None:
        self.state = check_transition(RESPONSE_TRANSITIONS, self.state, new)

    def cancel(self) -> None:
        """Stop the response: no tool starts after this, running ones are cancelled. Once it
        is cancelling or ending, a cancel changes nothing."""
        if self.state in (ResponseState.CANCELLING, ResponseState.FINISHING, ResponseState.DONE):
            return
        self._move(ResponseState.CANCELLING)
        if self._work is not None:
            self._work.cancel()

    def pause(self) -> None:
        """At shutdown: a response waiting for approvals ends now without denying them; they
        stay pending in the log, and their answers start a new response after the restart."""
        if self.state is ResponseState.AWAITING_APPROVAL and self._work is not None:
            self._paused = True
            self._work.cancel()

    async def run(self) -> None:
        """Run to the end; always records one assistant message and sends one `response.done`."""
        with self._tracing.response(
            session_id=self._session_id,
            owner=self._owner,
            response_id=self.response_id,
            model=self._provider.model,
        ) as span:
            self._span = span
            await self._run()

    async def _run(self) -> None:
        response_id_var.set(self.response_id)
        self._started_at = asyncio.get_running_loop().time()
        await self._out.send(ResponseStarted(response_id=self.response_id, created_at=_now()))
        status, error = ResponseStatus.CANCELLED, None
        try:
            if self.state is ResponseState.STARTING:
                self._work = asyncio.create_task(self._rounds(), name=f"rounds-{self.response_id}")
                await asyncio.wait([self._work])
                status, error = self._outcome(self._work)
        except asyncio.CancelledError:
            # The runner itself is cancelled (shutdown): stop the work, close the response, go on.
            self._paused = self.state is ResponseState.AWAITING_APPROVAL
            await self._stop_work()
            await self._finish(ResponseStatus.CANCELLED, None)
            raise
        await self._finish(status, error)

    async def _stop_work(self) -> None:
        if self._work is not None and not self._work.done():
            self._work.cancel()
            await asyncio.wait([self._work])

    def _outcome(self, work: asyncio.Task[None]) -> tuple[ResponseStatus, ErrorInfo | None]:
        if work.cancelled():
            return ResponseStatus.CANCELLED, None
        error = work.exception()
        if error is None:
            return ResponseStatus.COMPLETED, None
        if isinstance(error, LLMError):
            code = LLM_ERROR_CODES[error.kind]
            return ResponseStatus.FAILED, ErrorInfo(code=code, message=error.message)
        if isinstance(error, ToolRoundsExceeded):
            message = f"the model asked for tools more than {self._config.max_tool_rounds} rounds"
            return ResponseStatus.FAILED, ErrorInfo(
                code=ErrorCode.TOOL_ROUNDS_EXCEEDED, message=message
            )
        log.error("response %s failed", self.response_id, exc_info=error)
        info = ErrorInfo(code=ErrorCode.INTERNAL_ERROR, message="the server failed; please retry")
        return ResponseStatus.FAILED, info

    async def _rounds(self) -> None:
        if self._resumed is not None:
            self._move(ResponseState.RUNNING_TOOLS)
            await self._run_round(self._resumed.calls, self._resumed.decisions)
        for round_number in range(self._config.max_tool_rounds + 1):
            self._move(ResponseState.STREAMING)
            calls = await self._stream_round()
            if not calls:
                return
            if round_number == self._config.max_tool_rounds:
                raise ToolRoundsExceeded
            await self._run_tools(calls)

    async def _stream_round(self) -> list[ToolCallRequest]:
        tools = self._tools.definitions()
        try:
            return await self._stream_call(await self._prompt(tools, hard=False), tools)
        except PromptTooLong:
            pass
        # The upstream counted more than our estimate: fold harder and try once more.
        try:
            return await self._stream_call(await self._prompt(tools, hard=True), tools)
        except PromptTooLong as e:
            raise e.refusal from e

    async def _stream_call(
        self, messages: list[ChatMessage], tools: list[ToolDefinition]
    ) -> list[ToolCallRequest]:
        calls: list[ToolCallRequest] = []
        received = 0
        try:
            stream = self._provider.stream(messages, tools=tools, on_status=self._on_status)
            async with aclosing(stream) as events:
                async for event in events:
                    received += 1
                    await self._on_event(event, calls)
        except LLMError as e:
            if e.kind is LLMErrorKind.CONTEXT_TOO_LONG and received == 0:
                raise PromptTooLong(e) from e
            raise
        return calls

    async def _on_status(self, status: ModelStatus) -> None:
        frame = ResponseWaiting(
            response_id=self.response_id,
            state=status.state,
            ahead=status.ahead,
            message=status.message,
        )
        await self._out.send(frame)

    async def _on_event(self, event: LLMEvent, calls: list[ToolCallRequest]) -> None:
        if isinstance(event, TextDelta):
            if not self._progress.text:
                elapsed = asyncio.get_running_loop().time() - self._started_at
                self._metrics.time_to_first_token.observe(elapsed)
            # What the client sees is what is stored: `response.done.text` is their sum.
            text = storable_text(event.text)
            self._progress.text.append(text)
            self._metrics.tokens_streamed.inc()
            await self._out.send(ResponseDelta(response_id=self.response_id, text=text))
        elif isinstance(event, ToolCallRequest):
            calls.append(event)
        elif isinstance(event, Finished):
            self._on_finished(event)
        else:
            assert_never(event)

    def _on_finished(self, event: Finished) -> None:
        usage = storable_object(event.usage) if event.usage is not None else None
        self._progress.finish_reason = storable_text(event.finish_reason)
        self._progress.usage = add_usage(self._progress.usage, usage)
        self._progress.model = storable_text(event.model)

    async def _run_tools(self, calls: list[ToolCallRequest]) -> None:
        announced = [await self._announce(call) for call in calls]
        decisions = await self._approvals_for(announced)
        self._move(ResponseState.RUNNING_TOOLS)
        await self._run_round(announced, decisions)

    async def _run_round(self, calls: list[ToolCallEvent], decisions: dict[str, Decision]) -> None:
        """Run the round's calls concurrently; a call denied (or timed out) gets its error."""
        async with asyncio.TaskGroup() as group:
            for event in calls:
                decision = decisions.get(event.call_id)
                denial = decision.denial if decision is not None else None
                if denial is not None:
                    group.create_task(self._close_call(event, result=None, error=denial))
                else:
                    group.create_task(self._run_tool(event), name=f"tool-{event.call_id}")

    async def _approvals_for(self, calls: list[ToolCallEvent]) -> dict[str, Decision]:
        """Announce the calls that need the person's approval and wait for every answer (or
        its expiry): the round runs once all of them are decided."""
        gated = [
            call
            for call in calls
            if call.raw_arguments is None and self._tools.needs_approval(call.name)
        ]
        if not gated:
            return {}
        self._move(ResponseState.AWAITING_APPROVAL)
        expires_at = _now() + timedelta(seconds=self._config.approval_timeout_s)
        for call in gated:
            request = ToolApprovalRequestedEvent(
                seq=self._out.next_seq(),
                created_at=_now(),
                response_id=self.response_id,
                call_id=call.call_id,
                name=call.name,
                arguments=call.arguments,
                expires_at=expires_at,
            )
            self._out.record(request)
            self._approvals.open(request)
            await self._out.send(request)
        call_ids = [call.call_id for call in gated]
        try:
            return await self._approvals.decisions(call_ids)
        finally:
            self._approvals.close(call_ids)

    async def _announce(self, call: ToolCallRequest) -> ToolCallEvent:
        arguments = parse_arguments(call.arguments)
        tool = self._tools.get(call.name)
        event = ToolCallEvent(
            seq=self._out.next_seq(),
            created_at=_now(),
            response_id=self.response_id,
            call_id=storable_text(call.call_id),
            name=storable_text(call.name),
            arguments=storable_object(arguments) if arguments is not None else {},
            raw_arguments=None if arguments is not None else storable_text(call.arguments),
            server=tool.server if tool is not None else None,
        )
        self._progress.open_calls[event.call_id] = event
        self._out.record(event)
        await self._out.send(event)
        return event

    async def _run_tool(self, call: ToolCallEvent) -> None:
        started = asyncio.get_running_loop().time()
        result: JsonValue = None
        error: str | None = None
        with self._tracing.tool_call(
            name=call.name,
            call_id=call.call_id,
            arguments=call.arguments,
            session_id=self._session_id,
            owner=self._owner,
            mcp=mcp_origin(self._tools.get(call.name)),
        ) as span:
            try:
                result = await self._call_tool(call)
            except ToolError as e:
                error = str(e)
            span.finished(result=result, error=error)
        elapsed = asyncio.get_running_loop().time() - started
        # Unknown names come from the model: one label for all of them keeps the series bounded.
        label = call.name if self._tools.get(call.name) else "unknown"
        self._metrics.observe_tool(label, ok=error is None, seconds=elapsed)
        await self._close_call(call, result=result, error=error)

    async def _call_tool(self, call: ToolCallEvent) -> JsonValue:
        """The tool's result; every failure the model should hear about is a `ToolError`."""
        tool = self._tools.get(call.name)
        if tool is None:
            raise ToolError(
                f"unknown tool {call.name!r}; available: {', '.join(self._tools.names)}"
            )
        if call.raw_arguments is not None:
            raise ToolError("the arguments were not a JSON object")
        timeout_s = tool.timeout_s or self._config.tool_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await tool.call(call.arguments, self._tool_context)
        except TimeoutError as e:
            raise ToolError(f"timed out after {timeout_s:g} s") from e
        except (ToolError, asyncio.CancelledError):
            raise
        except Exception as e:
            log.exception("tool %s crashed", call.name)
            raise ToolError(f"the tool failed unexpectedly ({type(e).__name__})") from e

    async def _close_call(
        self, call: ToolCallEvent, *, result: JsonValue, error: str | None
    ) -> None:
        self._progress.open_calls.pop(call.call_id, None)
        event = ToolResultEvent(
            seq=self._out.next_seq(),
            created_at=_now(),
            response_id=self.response_id,
            call_id=call.call_id,
            name=call.name,
            ok=error is None,
            result=storable_json(result),
            error=None if error is None else storable_text(error),
        )
        self._out.record(event)
        await self._out.send(event)

    async def _finish(self, status: ResponseStatus, error: ErrorInfo | None) -> None:
        self._move(ResponseState.FINISHING)
        progress = self._progress
        if self._paused:
            # Its calls stay open: the log keeps them pending until answered or expired.
            status, error = ResponseStatus.COMPLETED, None
            progress.open_calls.clear()
            progress.finish_reason = FINISH_AWAITING_APPROVAL
        reason = "cancelled" if status is ResponseStatus.CANCELLED else "aborted"
        for call in list(progress.open_calls.values()):
            await self._close_call(call, result=None, error=reason)
        if status is ResponseStatus.CANCELLED:
            progress.finish_reason = "cancelled"
        elif status is ResponseStatus.FAILED:
            progress.finish_reason = "error"
        text = "".join(progress.text)
        message = AssistantMessageEvent(
            seq=self._out.next_seq(),
            created_at=_now(),
            response_id=self.response_id,
            status=status,
            text=text,
            finish_reason=progress.finish_reason,
            usage=progress.usage,
            model=progress.model,
            error=error,
            supersedes=self.supersedes,
        )
        self._out.record(message)
        if self._span is not None:
            self._span.finished(message, self._history)
        self._metrics.responses.labels(status=status.value).inc()
        self.status = status
        self._move(ResponseState.DONE)
        await self._out.send(done_frame(message))
