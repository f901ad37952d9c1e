"""Logging: JSON lines carrying `session_id` and `response_id`, with secrets redacted."""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

import orjson
from opentelemetry import trace

session_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "session_id", default=None
)
response_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "response_id", default=None
)

# Credentials travel in query strings (`?token=`) and headers (`Bearer …`): never log them.
# A query parameter's name is judged once percent-decoded (and `+` read as a space), as Starlette
# reads it: `?%74oken=…` is accepted as `token` and must be redacted as one.
_QUERY_PARAMETER = re.compile(r"(?P<lead>[?&])(?P<name>[^=&?#\s\"']+)=(?P<value>[^&#\s\"']+)")
_CREDENTIAL_NAME = re.compile(r"(?i)(token|api[\s_-]?key)$")
_TOKEN_PATTERNS = (
    re.compile(r"(?i)(token=)[^&\s\"']+"),
    re.compile(r"(?i)(bearer\s+)[^\s\"']+"),
    re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',&]+"),
)
REDACTED = "[redacted]"


def trace_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids (hex, as tracing tools show them), if any."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


_STANDARD_ATTRIBUTES = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactSecrets(logging.Filter):
    """Rewrites a record's message so no token or configured secret survives in it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = _QUERY_PARAMETER.sub(_redact_credential_parameter, text)
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(rf"\g<1>{REDACTED}", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        # Redact the template and each argument apart: some formatters (uvicorn's access log)
        # read `record.args` positionally, so their shape must stay.
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def _redact_credential_parameter(match: re.Match[str]) -> str:
    if not _CREDENTIAL_NAME.search(unquote_plus(match["name"]).strip()):
        return match[0]
    return f"{match['lead']}{match['name']}={REDACTED}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, session, response, trace and span
    ids (inside a span), exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("session_id", session_id_var), ("response_id", response_id_var)):
            if (value := var.get()) is not None:
                entry[key] = value
        if (ids := trace_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRIBUTES})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class ContextFormatter(logging.Formatter):
    """Readable text lines that still name the session, the response and the trace."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        traced = trace_ids()
        pairs = (
            ("session", session_id_var.get()),
            ("response", response_id_var.get()),
            ("trace", traced[0] if traced else None),
        )
        ids = [f"{name}={value}" for name, value in pairs if value]
        return f"{line} [{' '.join(ids)}]" if ids else line


def configure_logging(*, level: str, json_lines: bool, secrets: Iterable[str]) -> None:
    """Root logging for the app, and redaction on every logger that may see a credential."""
    handler = logging.StreamHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ContextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    redaction = RedactSecrets(secrets)
    handler.addFilter(redaction)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # uvicorn's loggers have their own handlers: its access log would show `?token=…`.
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error", "httpx"):
        logger = logging.getLogger(name)
        if redaction not in logger.filters:
            logger.addFilter(redaction)
