"""Tracing for one runtime: an SDK `TracerProvider` exporting OTLP over HTTP, or nothing.

The provider is the runtime's own, built in its lifespan and shut down with it; it is never set
as the process-wide provider (tests run several apps in one process, and a library's global
provider is not ours to take). Without an endpoint the SDK is not even imported.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from app.services.tracing.spans import Tracing
from app.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "app"
DEFAULT_SERVICE_NAME = "realtime-conversations"


def start_tracing(settings: Settings, *, exporter: SpanExporter | None = None) -> Tracing:
    """Tracing for a runtime: spans go to `exporter` (tests), else over OTLP/HTTP when an
    endpoint is set, else nowhere (the no-op tracer, no SDK)."""
    endpoint = otlp_traces_endpoint(settings)
    if exporter is None and endpoint is None:
        return Tracing.disabled()
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=_resource(settings))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))  # tests read spans at once
    else:
        assert endpoint is not None
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(settings, endpoint)))
        log.info("traces: exporting OTLP over HTTP to %s", endpoint)
    return Tracing(
        provider.get_tracer(INSTRUMENTATION_NAME),
        provider=provider,
        capture_content=settings.otel_capture_content,
        # Supabase's REST store writes to PostgreSQL too.
        db_system="sqlite" if settings.store_kind() == "sqlite" else "postgresql",
    )


def otlp_traces_endpoint(settings: Settings) -> str | None:
    """Where spans go: the traces endpoint as given, or the base endpoint + `/v1/traces` (as
    the OTLP exporter specification derives it)."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    return None


def provider_name_of(settings: Settings) -> str:
    """`gen_ai.provider.name` of the model provider in use (the conventions' value if any)."""
    if settings.llm_provider == "openai":
        return gen_ai.GenAiProviderNameValues.OPENAI.value
    if settings.llm_provider == "groq" or (
        settings.llm_provider == "auto" and settings.groq_api_key is not None
    ):
        return gen_ai.GenAiProviderNameValues.GROQ.value
    return "llama_cpp"  # the in-process local model


def _otlp_exporter(settings: Settings, endpoint: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.util.re import parse_env_headers

    # Endpoint and headers are passed here because `.env` reaches our settings but not the
    # SDK; its other OTEL_* variables (timeout, compression, certificates) it reads itself.
    headers = settings.otel_exporter_otlp_headers
    parsed = parse_env_headers(headers.get_secret_value(), liberal=True) if headers else None
    return OTLPSpanExporter(endpoint=endpoint, headers=parsed)


def _resource(settings: Settings) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    # `Resource.create()` reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME from the
    # environment; OTEL_SERVICE_NAME from `.env` comes through our settings; without either,
    # the server's own name rather than the SDK's `unknown_service`.
    detected = Resource.create()
    name = settings.otel_service_name
    unnamed = str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service")
    if name is None and unnamed:
        name = DEFAULT_SERVICE_NAME
    return detected.merge(Resource({SERVICE_NAME: name})) if name else detected
