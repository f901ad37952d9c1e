"""What a conversation is made of and talks to: its sink and opener, its dependencies, its
state, why it ends, and the tasks it owns."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from app.database.base import Lease, SessionRecord, Store
from app.protocol import ErrorCode, ServerFrame, UserMessageEvent
from app.services.context import ContextBudget
from app.services.event_writer import EventWriter
from app.services.llm.base import LLMProvider
from app.services.metrics import Metrics
from app.services.response_feed import LiveResponses, ResponseFeed
from app.services.runner import ResponseConfig, ResponseRunner
from app.services.summaries import Summarizer
from app.services.supervisor import TaskSupervisor
from app.services.tools import ToolRegistry
from app.services.tracing import Tracing
from app.services.usage import UsageGuard


class FrameSink(Protocol):
    """Where a conversation's frames go; sending after the client left is a silent no-op.
    Frames go out in the order `send` is called (a joining client's `session.ready` is sent
    before any frame of the response it joins)."""

    async def send(self, frame: ServerFrame) -> None: ...

    async def close(self, code: int, reason: str) -> None:
        """Close the connection from the server's side."""
        ...


class SessionOpener(Protocol):
    """Stores a new session (its row, then its lease) when its first message arrives: a
    connection that never speaks leaves nothing in the store."""

    async def open_session(self, record: SessionRecord) -> Lease: ...


class ConversationState(Enum):
    """A conversation's attachment to its client; changed only through `Conversation._move`."""

    OPEN = "open"  # a client is attached
    DETACHED = "detached"  # the client left; a response may still be finishing (and be joined)
    CLOSED = "closed"  # torn down: nothing runs, everything is stored


CONVERSATION_TRANSITIONS: dict[ConversationState, frozenset[ConversationState]] = {
    ConversationState.OPEN: frozenset({ConversationState.DETACHED, ConversationState.CLOSED}),
    ConversationState.DETACHED: frozenset({ConversationState.OPEN, ConversationState.CLOSED}),
    ConversationState.CLOSED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class ConversationDeps:
    """Everything a conversation uses, built once by the app."""

    store: Store
    writer: EventWriter
    provider: LLMProvider
    tools: ToolRegistry
    response: ResponseConfig
    context: ContextBudget
    summarizer: Summarizer
    metrics: Metrics
    supervisor: TaskSupervisor
    live: LiveResponses
    max_message_chars: int
    commit_timeout_s: float
    tracing: Tracing
    usage: UsageGuard
    max_queued_messages: int = 3


@dataclass(frozen=True, slots=True)
class Ending:
    """Why the server ends a conversation: the `error` frame to send, then the close code."""

    code: ErrorCode
    message: str
    close_code: int
    retryable: bool = False


@dataclass(slots=True)
class Storing:
    """A user message on its way to the store (its acknowledgement not sent yet)."""

    message: UserMessageEvent
    # Set once the client has its answer: the acknowledgement, or a retryable refusal.
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    # A stop came while it was being stored: its response starts cancelled.
    cancel_at_start: bool = False
    # Committed; its acknowledgement is on its way and its response starts next.
    acknowledged: bool = False


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(slots=True)
class ConversationTasks:
    """The conversation's own tasks: the response, and the message being stored."""

    runner: ResponseRunner | None = None
    feed: ResponseFeed | None = None
    response: asyncio.Task[None] | None = None
    storing: asyncio.Task[None] | None = None
    ending: asyncio.Task[None] | None = None
    # Waits for the answers of a round a stopped process left waiting for approval.
    paused: asyncio.Task[None] | None = None
