"""Attribute names and values shared by the spans: the conventions' where they have one."""

from __future__ import annotations

import contextvars
from collections.abc import Sequence

import orjson
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.attributes.enduser_attributes import ENDUSER_ID
from opentelemetry.semconv._incubating.attributes.session_attributes import SESSION_ID
from pydantic import JsonValue

# Our own attributes, where the conventions have none.
RESPONSE_STATUS = "conversation.response.status"
CONNECTION_RESUMED = "conversation.resumed"
JOB_KIND = "conversation.job.kind"
JOB_OUTCOME = "conversation.job.outcome"
BATCH_SESSION_IDS = "conversation.session_ids"

Attributes = dict[str, str | bool | int | float | Sequence[str]]

# The session and owner the current work is for: set by a connection once attached and by a
# response, inherited by the tasks they start, read by spans that cannot be told (a model
# request inside a summary job, say).
subject: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar(
    "tracing_subject", default=None
)


def current_who() -> Attributes:
    """`who()` of the current subject, with `gen_ai.conversation.id`; empty without one."""
    current = subject.get()
    if current is None:
        return {}
    session_id, owner = current
    return {gen_ai.GEN_AI_CONVERSATION_ID: session_id, **who(session_id, owner)}


def who(session_id: str | None, owner: str | None) -> Attributes:
    """`session.id` and `enduser.id` (the owner: a Supabase user id or an API key's hash)."""
    attributes: Attributes = {}
    if session_id is not None:
        attributes[SESSION_ID] = session_id
    if owner is not None:
        attributes[ENDUSER_ID] = owner
    return attributes


def as_json(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


def text_messages(role: str, text: str, finish_reason: str | None = None) -> str:
    """One message in the conventions' structured form (`gen_ai.input/output.messages`)."""
    message: dict[str, object] = {"role": role, "parts": [{"type": "text", "content": text}]}
    if finish_reason is not None:
        message["finish_reason"] = finish_reason
    return as_json([message])


def tokens(usage: dict[str, JsonValue] | None) -> Attributes:
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
