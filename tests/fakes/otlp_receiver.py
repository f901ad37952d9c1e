"""An OTLP/HTTP trace receiver on a real loopback socket: what a collector's `/v1/traces` does.

It decodes each `ExportTraceServiceRequest` (binary protobuf, gzip or not) with the official
`opentelemetry-proto` package, keeps every span with its service name, and answers as a
collector does, so the exporter under test sees a real success.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.fakes.loopback_http import LoopbackHttpServer, QuietHandler

TRACES_PATH = "/v1/traces"


def attribute_value(value: AnyValue) -> object:
    """An OTLP attribute value as a Python value (arrays as tuples)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(attribute_value(item) for item in value.array_value.values)
    return getattr(value, kind) if kind else None


def attributes_of(pairs: Any) -> dict[str, object]:
    items: list[KeyValue] = list(pairs)
    return {pair.key: attribute_value(pair.value) for pair in items}


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived, decoded."""

    service_name: object
    span: Span

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, object]:
        return attributes_of(self.span.attributes)


class OtlpReceiver(LoopbackHttpServer):
    """`{endpoint}/v1/traces`; `spans` holds everything received, in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0
        super().__init__(self._handler(), name="otlp-receiver")

    @property
    def endpoint(self) -> str:
        """What a server is given as OTEL_EXPORTER_OTLP_ENDPOINT."""
        return self.base_url

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def _receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            service = attributes_of(resource_spans.resource.attributes).get("service.name")
            for scope_spans in resource_spans.scope_spans:
                received.extend(ReceivedSpan(service, span) for span in scope_spans.spans)
        with self._lock:
            self.requests += 1
            self._spans.extend(received)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != TRACES_PATH:
                    self.send_error(404)
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._receive(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        return Handler
