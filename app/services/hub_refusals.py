"""Why a connection is refused, and the session ids and owners the hub checks first."""

from __future__ import annotations

import logging
import uuid

from app.database.base import SessionRecord, StoreError
from app.protocol import ErrorCode
from app.services.leases import LeaseBusy, SessionGone

log = logging.getLogger(__name__)


class ConnectRefused(Exception):
    """A connection cannot be attached to a session; `code` says why."""

    def __init__(self, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


def parse_session_id(raw: str) -> str | None:
    """The canonical form of a session id, or None when it is not one."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def visible_to(record: SessionRecord, owner: str | None) -> bool:
    """Sessions belong to whoever made them; another owner's session does not exist for you."""
    return record.owner == owner


def store_refusal(error: StoreError) -> ConnectRefused:
    log.warning("refusing a connection: the store does not answer: %s", error)
    return ConnectRefused(
        ErrorCode.STORE_UNAVAILABLE, "the store does not answer; retry shortly", retryable=True
    )


def lease_refusal(error: SessionGone | LeaseBusy) -> ConnectRefused:
    if isinstance(error, SessionGone):
        return ConnectRefused(ErrorCode.SESSION_NOT_FOUND, "no such session")
    message = (
        "the previous connection's response is still finishing; retry shortly"
        if error.retryable
        else "this session is open in another connection"
    )
    return ConnectRefused(ErrorCode.SESSION_BUSY, message, retryable=error.retryable)
