"""The context budget: every model request fits `CONTEXT_MAX_TOKENS`.

A request is the system prompt, the rolling summary (which stands in for the oldest turns), and
the most recent turns verbatim. When that is over budget, the oldest verbatim turns are folded
into the rolling summary. Turns are cut only at user messages, so a tool call is never separated
from its result. Token counts are a conservative estimate (bytes / 3); an upstream
`context_length_exceeded` folds harder and is retried once by the runner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import assert_never

import orjson

from app.protocol import StoredEvent, UserMessageEvent
from app.services.history import build_messages
from app.services.llm.base import (
    ChatMessage,
    ModelRequest,
    ModelResponse,
    SystemPart,
    TextPart,
    ToolCallPart,
    ToolDefinition,
    ToolReturnPart,
    UserPart,
)

ContentPart = SystemPart | UserPart | ToolReturnPart | TextPart

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 4
# Share of the budget the verbatim turns may fill right after a fold, so that folds are rare.
KEEP_SHARE = 0.6
# A fold after the upstream said the request was too long keeps much less.
HARD_KEEP_SHARE = 0.3
TRUNCATION_MARK = "\n[... {count} characters cut to fit the context budget ...]"

Fold = Callable[[str | None, Sequence[StoredEvent]], Awaitable[str]]

# Context windows of the models we know (prompt + answer), in tokens.
_KNOWN_WINDOWS = {
    "openai/gpt-oss-120b": 131_072,
    "openai/gpt-oss-20b": 131_072,
    "llama-3.3-70b-versatile": 131_072,
    "llama-3.1-8b-instant": 131_072,
    "qwen/qwen3.8-27b": 131_072,
}
DEFAULT_WINDOW_TOKENS = 32_768


LOCAL_WINDOW_TOKENS = 8_192  # the window the local provider runs llama.cpp with


def context_window_of(model: str) -> int:
    """The model's context window; unknown models get a cautious default."""
    if model.startswith("local:"):
        return LOCAL_WINDOW_TOKENS
    return _KNOWN_WINDOWS.get(model, DEFAULT_WINDOW_TOKENS)


def estimate_tokens(text: str) -> int:
    """An upper estimate of tokens: BPE tokens cover three bytes or more in ordinary text."""
    return len(text.encode()) // BYTES_PER_TOKEN + 1


def message_tokens(message: ChatMessage) -> int:
    """Each request part is a message of its own on the wire; a response is one message."""
    if isinstance(message, ModelRequest):
        return sum(MESSAGE_OVERHEAD_TOKENS + estimate_tokens(p.content) for p in message.parts)
    if isinstance(message, ModelResponse):
        text = "".join(part.content for part in message.parts if isinstance(part, TextPart))
        tokens = MESSAGE_OVERHEAD_TOKENS + estimate_tokens(text)
        for part in message.parts:
            if isinstance(part, ToolCallPart):
                tokens += estimate_tokens(part.name + part.arguments)
        return tokens
    assert_never(message)


def request_tokens(messages: Sequence[ChatMessage], tools: Sequence[ToolDefinition]) -> int:
    """Estimated prompt tokens of a request: its messages and its tool schemas."""
    tool_tokens = estimate_tokens(orjson.dumps(list(tools)).decode()) if tools else 0
    return sum(map(message_tokens, messages)) + tool_tokens


def split_turns(events: Sequence[StoredEvent]) -> list[list[StoredEvent]]:
    """Group events into turns, each starting at a user message (tool pairs stay in one turn).
    A queued message stays in the turn it was sent during: the model reads it after that
    turn's answer (`history.model_order`), so a fold never separates the two."""
    turns: list[list[StoredEvent]] = []
    for event in events:
        if (isinstance(event, UserMessageEvent) and not event.queued) or not turns:
            turns.append([])
        turns[-1].append(event)
    return turns


@dataclass(slots=True)
class RollingSummary:
    """The summary of events `1..upto_seq`, as kept in the store."""

    text: str | None
    upto_seq: int


def compose(
    system_prompt: str, summary: RollingSummary, events: Sequence[StoredEvent]
) -> list[ChatMessage]:
    """System prompt, then the rolling summary, then the events after it, verbatim."""
    recent = [event for event in events if event.seq > summary.upto_seq]
    messages = build_messages(system_prompt, recent)
    if summary.text:
        note = f"Summary of the earlier part of this conversation:\n{summary.text}"
        messages.insert(1, ModelRequest([SystemPart(note)]))
    return messages


class ContextBudget:
    """Fits model requests into `max_tokens`, folding old turns into the rolling summary."""

    def __init__(self, *, max_tokens: int, system_prompt: str, fold: Fold) -> None:
        self.max_tokens = max_tokens
        self._system_prompt = system_prompt
        self._fold = fold

    async def fit(
        self,
        events: Sequence[StoredEvent],
        summary: RollingSummary,
        tools: Sequence[ToolDefinition],
        *,
        hard: bool = False,
    ) -> tuple[list[ChatMessage], RollingSummary]:
        """The messages of the next request and the (maybe new) rolling summary."""
        messages = compose(self._system_prompt, summary, events)
        if not hard and request_tokens(messages, tools) <= self.max_tokens:
            return messages, summary
        share = HARD_KEEP_SHARE if hard else KEEP_SHARE
        summary = await self._fold_old_turns(events, summary, tools, share)
        messages = compose(self._system_prompt, summary, events)
        return self._truncate_to_budget(messages, tools), summary

    async def _fold_old_turns(
        self,
        events: Sequence[StoredEvent],
        summary: RollingSummary,
        tools: Sequence[ToolDefinition],
        share: float,
    ) -> RollingSummary:
        turns = split_turns([event for event in events if event.seq > summary.upto_seq])
        keep = self._turns_to_keep(turns, summary, tools, share)
        folded = [event for turn in turns[: len(turns) - keep] for event in turn]
        if not folded:
            return summary
        text = await self._fold(summary.text, folded)
        return RollingSummary(text=text, upto_seq=folded[-1].seq)

    def _turns_to_keep(
        self,
        turns: list[list[StoredEvent]],
        summary: RollingSummary,
        tools: Sequence[ToolDefinition],
        share: float,
    ) -> int:
        """How many trailing turns fit in `share` of the budget (always the current one)."""
        # Room for the summary the fold will write (at most a quarter of the budget).
        target = int(self.max_tokens * share)
        fixed = request_tokens(compose(self._system_prompt, summary, []), tools)
        used = fixed + self.max_tokens // 4
        keep = 0
        for turn in reversed(turns):
            cost = sum(map(message_tokens, build_messages("", turn)[1:]))
            if keep > 0 and used + cost > target:
                break
            used += cost
            keep += 1
        return keep

    def _truncate_to_budget(
        self, messages: list[ChatMessage], tools: Sequence[ToolDefinition]
    ) -> list[ChatMessage]:
        """Cut the largest contents until the request fits (a single huge turn, say)."""
        while (excess := request_tokens(messages, tools) - self.max_tokens) > 0:
            largest = max(_contents(messages), key=lambda part: len(part.content.encode()))
            content = largest.content
            cut = cut_to_fit(content, max_bytes_for(estimate_tokens(content) - excess))
            if len(cut.encode()) >= len(content.encode()):
                raise ContextTooSmall(self.max_tokens)  # nothing left worth cutting
            largest.content = cut  # the messages are compose()'s own: no one else holds them
        return messages


def max_bytes_for(tokens: int) -> int:
    """The most UTF-8 bytes a text may have for `estimate_tokens` to give `tokens` or fewer."""
    return tokens * BYTES_PER_TOKEN - 1


def cut_to_fit(content: str, max_bytes: int) -> str:
    """The longest prefix of `content` that fits `max_bytes` of UTF-8 with the mark that says
    how many characters were cut after it. Budgets count bytes, so the cut does too: a character
    is 1 to 4 bytes, and one is never split."""
    kept = _utf8_prefix(content, max_bytes - _mark_bytes(len(content)))
    size = len(kept.encode())
    # The mark shrinks by a digit as the count of cut characters does: use the room that frees.
    for char in content[len(kept) :]:
        grown = size + len(char.encode())
        if grown + _mark_bytes(len(content) - len(kept) - 1) > max_bytes:
            break
        kept, size = kept + char, grown
    return kept + TRUNCATION_MARK.format(count=len(content) - len(kept))


def _utf8_prefix(text: str, max_bytes: int) -> str:
    # A prefix of valid UTF-8 is valid but for its last character, which `ignore` drops whole.
    return text.encode()[: max(0, max_bytes)].decode(errors="ignore")


def _mark_bytes(count: int) -> int:
    return len(TRUNCATION_MARK.format(count=count).encode())


def _contents(messages: Sequence[ChatMessage]) -> list[ContentPart]:
    """The parts with a content, in order (tool calls have none)."""
    return [
        part for message in messages for part in message.parts if not isinstance(part, ToolCallPart)
    ]


class ContextTooSmall(Exception):
    """Even the system prompt and tool schemas do not fit the budget."""

    def __init__(self, max_tokens: int) -> None:
        super().__init__(f"CONTEXT_MAX_TOKENS={max_tokens} is too small for the prompt and tools")
