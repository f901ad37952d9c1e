"""The Vercel AI SDK's chat protocol (`useChat`) on top of the conversations: see docs/ai-sdk.md."""

from app.services.ai_sdk.chat_ids import CHAT_ID_PATTERN, InvalidChatId
from app.services.ai_sdk.turns import ChatRefused, ChatRequest, ChatTurns, Turn

__all__ = ["CHAT_ID_PATTERN", "ChatRefused", "ChatRequest", "ChatTurns", "InvalidChatId", "Turn"]
