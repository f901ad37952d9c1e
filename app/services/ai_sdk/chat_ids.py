"""AI SDK chat ids: the client's own short ids, each owner's separately, mapped to session ids."""

from __future__ import annotations

import re
import uuid

# useChat makes ids like "aVzdKFXqMvWg9hQ2": letters, digits, `_` and `-`, at most 64.
CHAT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_CHAT_ID = re.compile(CHAT_ID_PATTERN)
# Fixed forever: every stored chat's session id is derived from it.
_CHAT_NAMESPACE = uuid.UUID("0b8f2f4e-5d0c-4a8e-9a51-2f0d7c1e6a3b")


class InvalidChatId(ValueError):
    """A chat id outside 1 to 64 characters of `[A-Za-z0-9_-]`."""


def check_chat_id(chat_id: str) -> str:
    if not _CHAT_ID.fullmatch(chat_id):
        raise InvalidChatId("a chat id is 1 to 64 characters of letters, digits, '_' and '-'")
    return chat_id


def derived_session_id(chat_id: str, owner: str | None) -> str:
    """The session of `owner`'s chat `chat_id`: two owners' equal chat ids are two sessions."""
    # NUL cannot occur in either part (chat ids are checked, owners are tokens' subjects).
    return str(uuid.uuid5(_CHAT_NAMESPACE, f"{owner or ''}\x00{chat_id}"))
