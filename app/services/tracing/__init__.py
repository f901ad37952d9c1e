"""OpenTelemetry traces of every turn, exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT`
is set, and nothing at all (no SDK, no spans, no cost) when it is not (docs/operations.md).

`setup.py` builds the runtime's tracer provider, `spans.py` the spans the seams open (response,
tool call, store batch, job, connection, REST request), `chat.py` a span per model request.
"""

from app.services.tracing.attributes import (
    BATCH_SESSION_IDS,
    CONNECTION_RESUMED,
    JOB_KIND,
    JOB_OUTCOME,
    RESPONSE_STATUS,
)
from app.services.tracing.chat import FIRST_CHUNK_EVENT, TracedProvider
from app.services.tracing.setup import (
    DEFAULT_SERVICE_NAME,
    otlp_traces_endpoint,
    provider_name_of,
    start_tracing,
)
from app.services.tracing.spans import (
    STORE_RETRY_EVENT,
    ConnectionSpan,
    HttpSpan,
    JobSpan,
    McpOrigin,
    ResponseSpan,
    ToolSpan,
    Tracing,
)

__all__ = [
    "BATCH_SESSION_IDS",
    "CONNECTION_RESUMED",
    "DEFAULT_SERVICE_NAME",
    "FIRST_CHUNK_EVENT",
    "JOB_KIND",
    "JOB_OUTCOME",
    "RESPONSE_STATUS",
    "STORE_RETRY_EVENT",
    "ConnectionSpan",
    "HttpSpan",
    "JobSpan",
    "McpOrigin",
    "ResponseSpan",
    "ToolSpan",
    "TracedProvider",
    "Tracing",
    "otlp_traces_endpoint",
    "provider_name_of",
    "start_tracing",
]
