"""The request bodies of the AI SDK's chat transports, checked, and the turn each asks for."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, TypeAdapter, ValidationError

from app.protocol import MAX_CLIENT_ID_CHARS
from app.services.ai_sdk.chat_ids import CHAT_ID_PATTERN
from app.services.ai_sdk.turns import ChatRequest

ChatId = Annotated[StrictStr, Field(pattern=CHAT_ID_PATTERN)]


class BadChatRequest(ValueError):
    """The body is well-formed JSON but not a turn this server can take."""


class ChatBody(BaseModel):
    """What `DefaultChatTransport` POSTs (and `WebSocketChatTransport` sends in `send`); fields
    of the caller's own `body` option are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: ChatId
    # Only the last one is read: the stored history is the truth.
    messages: list[dict[str, Any]] = Field(default_factory=list)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: StrictStr | None = None  # noqa: N815 (the AI SDK's name)


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: StrictStr
    text: StrictStr | None = None


class _UserMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_CLIENT_ID_CHARS)]
    role: Literal["user"]
    parts: list[_TextPart]


def chat_request(body: ChatBody) -> ChatRequest:
    """The turn the body asks for: the last message (a user message with text), or a
    regenerate (of the answer `messageId` names, or of the last one)."""
    if body.trigger == "regenerate-message":
        return _regenerate(body)
    if not body.messages:
        raise BadChatRequest("messages must hold the new user message")
    message = _user_message(body.messages[-1])
    return ChatRequest(
        chat_id=body.id, regenerate=False, text=_text_of(message), message_id=message.id
    )


def _regenerate(body: ChatBody) -> ChatRequest:
    """useChat's regenerate sends the messages up to the user message it answers again: that
    message rides along, so that a retry of a message that was never stored sends it."""
    last = body.messages[-1] if body.messages else None
    if last is None or last.get("role") != "user":
        return ChatRequest(chat_id=body.id, regenerate=True, replaces=body.messageId)
    message = _user_message(last)
    return ChatRequest(
        chat_id=body.id,
        regenerate=True,
        replaces=body.messageId,
        text=_text_of(message),
        message_id=message.id,
    )


def _user_message(raw: dict[str, Any]) -> _UserMessage:
    try:
        return _UserMessage.model_validate(raw)
    except ValidationError as e:
        raise BadChatRequest(
            "the last message must be a user message with an id of 1 to "
            f"{MAX_CLIENT_ID_CHARS} characters and text parts: {_first_error(e)}"
        ) from e


def _text_of(message: _UserMessage) -> str:
    """Its text parts, joined; any other part (a file) is refused: the model reads text."""
    others = sorted({part.type for part in message.parts if part.type != "text"})
    if others:
        raise BadChatRequest(
            f"only text parts are supported; this message has: {', '.join(others)}"
        )
    texts = [part.text for part in message.parts if part.text]
    if not texts:
        raise BadChatRequest("the last message has no text part (only text is supported)")
    return "\n".join(texts)


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


# ---------------------------------------------------------------- WebSocketChatTransport frames

RequestId = Annotated[StrictStr, Field(min_length=1, max_length=128)]


class SendFrame(ChatBody):
    """`send`: a turn, with the same fields as the HTTP body."""

    type: Literal["send"]
    requestId: RequestId  # noqa: N815


class ResumeFrame(BaseModel):
    """`resume`: the chat's running answer; `lastSequence` skips chunks the client has."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["resume"]
    requestId: RequestId  # noqa: N815
    id: ChatId
    lastSequence: Annotated[int, Field(ge=0)] | None = None  # noqa: N815


class AbortFrame(BaseModel):
    """`abort`: stop the answer the request follows."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["abort"]
    requestId: RequestId  # noqa: N815


TransportFrame = Annotated[SendFrame | ResumeFrame | AbortFrame, Field(discriminator="type")]
transport_frame_adapter: TypeAdapter[TransportFrame] = TypeAdapter(TransportFrame)
