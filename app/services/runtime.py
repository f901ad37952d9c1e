"""Builds and closes everything the server runs on, in the app's lifespan (never at import time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import TYPE_CHECKING, Any

from app.database.base import Store, StoreError
from app.database.factory import create_store
from app.services.auth import Authenticator, create_authenticator
from app.services.context import ContextBudget, context_window_of
from app.services.conversation import ConversationDeps
from app.services.event_writer import EventWriter
from app.services.hub import SessionHub
from app.services.instance import InstanceSlot, take_slot
from app.services.leases import LeaseKeeper
from app.services.llm import create_provider, summary_model
from app.services.llm.base import LLMProvider
from app.services.mcp.source import McpToolSource
from app.services.metrics import Metrics
from app.services.rate_limit import ConnectionRateLimiter
from app.services.response_bus import ResponseBus, connect_redis
from app.services.response_feed import LiveResponses
from app.services.retention import RetentionSweeper
from app.services.runner import ResponseConfig
from app.services.sessions import SessionDirectory
from app.services.spill import replay_spill, write_spill
from app.services.summaries import Summarizer
from app.services.supervisor import TaskSupervisor
from app.services.tools import DEMO_PROFILES, ToolFunction, ToolRegistry
from app.services.tracing import Tracing, provider_name_of, start_tracing
from app.services.usage import UsageGuard, UsageLimits
from app.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

WRITER_SERVICE = "event-writer"
# After the grace period, what shutdown still allows itself: the writer's last attempt (then
# the spill), the services' stop, closing the store.
_WRITER_CLOSE_S = 1.0
_SERVICES_STOP_S = 0.5
_STORE_CLOSE_S = 1.0
# Stopping MCP servers: the SDK closes a stdio child's stdin, waits 2 s, then kills its group.
_MCP_STOP_S = 5.0


@dataclass(slots=True)
class ShutdownClock:
    """When shutdown began, so that the drain and the lifespan's stop share one grace."""

    started_at: float | None = None

    def remaining(self, grace_s: float) -> float:
        if self.started_at is None:
            return grace_s
        elapsed = asyncio.get_running_loop().time() - self.started_at
        return max(grace_s - elapsed, 0.0)


@dataclass(frozen=True, slots=True)
class Runtime:
    """The running server's parts, shared by every request and connection."""

    settings: Settings
    store: Store
    writer: EventWriter
    provider: LLMProvider
    supervisor: TaskSupervisor
    metrics: Metrics
    summarizer: Summarizer
    hub: SessionHub
    sessions: SessionDirectory
    auth: Authenticator
    leases: LeaseKeeper
    slot: InstanceSlot
    tracing: Tracing
    retention: RetentionSweeper
    # New connections per client address (None: unlimited), and whose X-Forwarded-For counts.
    connection_limiter: ConnectionRateLimiter | None
    trusted_proxies: list[IPv4Network | IPv6Network]
    mcp: McpToolSource | None = None
    shutdown: ShutdownClock = field(default_factory=ShutdownClock)
    bus: ResponseBus | None = None


async def start_runtime(
    settings: Settings,
    *,
    tools: Sequence[ToolFunction],
    span_exporter: SpanExporter | None = None,
) -> Runtime:
    """Open the store, take over what a dead predecessor left, start the writer, pick the
    model, and resume pending summaries. Spans go to `span_exporter` when given (tests), else
    over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    store = create_store(settings)
    await store.open()
    try:
        slot = take_slot(settings.state_dir)
    except BaseException:
        await store.close()
        raise
    tracing = start_tracing(settings, exporter=span_exporter)
    try:
        return await _start(settings, store, slot, tools, tracing)
    except BaseException:
        await asyncio.to_thread(tracing.shutdown)
        slot.release()
        await store.close()
        raise


async def _start(
    settings: Settings,
    store: Store,
    slot: InstanceSlot,
    tools: Sequence[ToolFunction],
    tracing: Tracing,
) -> Runtime:
    await _take_over(store, slot)
    await store.profiles.upsert(DEMO_PROFILES)
    metrics = Metrics()
    supervisor = TaskSupervisor()
    writer = EventWriter(
        store.events,
        flush_interval_s=settings.write_flush_ms / 1000,
        batch_max=settings.write_batch_max,
        buffer_max=settings.write_buffer_max,
        on_write=metrics.store_write_seconds.observe,
        tracing=tracing,
    )
    supervisor.spawn_service(writer.run, name=WRITER_SERVICE)
    # In a thread: a client loads its TLS certificates (tens of ms), the local model its library.
    provider = tracing.traced_provider(
        await asyncio.to_thread(create_provider, settings),
        provider_name=provider_name_of(settings),
    )
    summarizer = _summarizer(
        settings, store, provider, supervisor, metrics, slot.instance_id, tracing
    )
    context_max_tokens = settings.context_max_tokens or (
        context_window_of(provider.model) - settings.llm_max_completion_tokens
    )
    mcp = _start_mcp(settings, supervisor, metrics)
    deps = ConversationDeps(
        store=store,
        writer=writer,
        provider=provider,
        tools=ToolRegistry(
            tools,
            sources=[mcp] if mcp is not None else [],
            approval_patterns=settings.tools_require_approval,
        ),
        response=ResponseConfig(
            max_tool_rounds=settings.max_tool_rounds,
            tool_timeout_s=settings.tool_timeout_s,
            approval_timeout_s=settings.tool_approval_timeout_s,
        ),
        context=ContextBudget(
            max_tokens=context_max_tokens,
            system_prompt=settings.system_prompt,
            fold=summarizer.fold,
        ),
        summarizer=summarizer,
        metrics=metrics,
        supervisor=supervisor,
        live=LiveResponses(),
        max_message_chars=settings.max_message_chars,
        commit_timeout_s=settings.store_commit_timeout_s,
        max_queued_messages=settings.max_queued_messages,
        tracing=tracing,
        usage=UsageGuard(
            store.usage,
            UsageLimits(
                tokens_per_day=settings.owner_tokens_per_day,
                max_live_sessions=settings.owner_max_live_sessions,
                sessions_per_hour=settings.owner_sessions_per_hour,
            ),
        ),
    )
    leases = LeaseKeeper(
        store.leases, metrics, instance_id=slot.instance_id, ttl_s=settings.lease_ttl_s
    )
    bus = _start_bus(settings, deps, metrics, supervisor)
    hub = SessionHub(deps, summarizer, leases, resume_wait_s=settings.resume_wait_s, bus=bus)
    runtime = Runtime(
        settings,
        store,
        writer,
        provider,
        supervisor,
        metrics,
        summarizer,
        hub,
        SessionDirectory(store, hub),
        create_authenticator(settings),
        leases,
        slot,
        tracing,
        RetentionSweeper(
            store.retention,
            store.usage,
            holder=slot.instance_id,
            retention_days=settings.retention_days,
            sweep_s=settings.retention_sweep_s,
            batch=settings.retention_batch,
        ),
        _connection_limiter(settings),
        [ip_network(entry, strict=False) for entry in settings.trusted_proxies],
        mcp,
        bus=bus,
    )
    # Queued messages a stopped process left are answered with no client (docs/protocol.md).
    supervisor.spawn(hub.answer_left_queues(), name="left-queues")
    resumed = await summarizer.resume_pending()
    # Both loops end on stop (the heartbeat once every lease is released), so other instances
    # see this one's sessions free as soon as it is gone; a loop that fails is restarted.
    supervisor.spawn_service(leases.run, name="lease-heartbeat")
    supervisor.spawn_service(summarizer.poll, name="summary-poll", background=True)
    supervisor.spawn_service(runtime.retention.run, name="retention", background=True)
    log.info(
        "ready: store=%s model=%s instance=%s slot=%d pending_summaries=%d",
        store.kind,
        provider.model,
        slot.instance_id,
        slot.number,
        resumed,
    )
    return runtime


def _start_bus(
    settings: Settings, deps: ConversationDeps, metrics: Metrics, supervisor: TaskSupervisor
) -> ResponseBus | None:
    """With `REDIS_URL`: publish every running response's frames, take cancels from clients
    joined elsewhere. Redis need not be up: both services retry, joins fall back meanwhile."""
    if settings.redis_url is None:
        return None
    bus = ResponseBus(
        connect_redis(settings.redis_url),
        metrics,
        maxlen=settings.redis_stream_maxlen,
        ttl_s=settings.redis_stream_ttl_s,
        buffer_max=settings.redis_buffer_max,
    )
    deps.live.add_listener(bus.offer)
    supervisor.spawn_service(bus.publish, name="bus-publisher")
    live = deps.live
    supervisor.spawn_service(lambda: bus.listen_for_cancels(live), name="bus-cancels")
    return bus


def _connection_limiter(settings: Settings) -> ConnectionRateLimiter | None:
    per_minute = settings.connections_per_minute_per_ip
    return None if per_minute is None else ConnectionRateLimiter(per_minute=per_minute)


async def _take_over(store: Store, slot: InstanceSlot) -> None:
    """What the previous process of this slot left (it is dead: its lock was free): its spilled
    events go into the store first (under their own leases), then its leases are freed and its
    claimed jobs handed back, so nothing waits for them to expire."""
    replayed = await replay_spill(slot.spill_path, store.events)
    if replayed:
        log.info("replayed %d events spilled by the previous process", replayed)
    if slot.predecessor_id is None:
        return
    freed = await store.leases.release_holder(slot.predecessor_id)
    handed_back = await store.jobs.reclaim(slot.predecessor_id)
    if freed or handed_back:
        log.info(
            "took over from the previous process: %d leases freed, %d jobs handed back",
            freed,
            handed_back,
        )


def _start_mcp(
    settings: Settings, supervisor: TaskSupervisor, metrics: Metrics
) -> McpToolSource | None:
    """Each configured MCP server runs as a service: it connects (or starts its child) and
    reconnects with backoff by itself, so one that fails at start does not stop the app."""
    if settings.mcp_config is None:
        return None
    source = McpToolSource(
        settings.mcp_config, call_timeout_s=settings.tool_timeout_s, metrics=metrics
    )
    for link in source.links:
        supervisor.spawn_service(link.run, name=mcp_service_name(link.name))
    return source


def mcp_service_name(server: str) -> str:
    return f"mcp-{server}"


async def _stop_mcp(runtime: Runtime) -> None:
    if runtime.mcp is None:
        return
    for link in runtime.mcp.links:
        link.stop()
    await asyncio.gather(
        *(
            runtime.supervisor.stop_service(mcp_service_name(link.name), timeout_s=_MCP_STOP_S)
            for link in runtime.mcp.links
        )
    )


def _summarizer(
    settings: Settings,
    store: Store,
    provider: LLMProvider,
    supervisor: TaskSupervisor,
    metrics: Metrics,
    claimant: str,
    tracing: Tracing,
) -> Summarizer:
    summaries_model = summary_model(settings, provider)
    return Summarizer(
        store=store,
        provider=provider,
        supervisor=supervisor,
        metrics=metrics,
        model=summaries_model,
        title_model=settings.title_model or summaries_model,
        window_tokens=settings.summary_window_tokens or context_window_of(summaries_model),
        concurrency=settings.summary_concurrency,
        claimant=claimant,
        poll_s=settings.summary_poll_s,
        claim_timeout_s=settings.summary_claim_timeout_s,
        retry_s=settings.summary_retry_s,
        tracing=tracing,
    )


def drain_on_signals(runtime: Runtime) -> None:
    """On SIGTERM/SIGINT, drain first (responses finish within SHUTDOWN_GRACE_S, events flushed,
    sockets closed with 1001), then hand over to the server's own handler, which stops the
    process. Only the main thread can own signals: elsewhere (tests) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(number)
        if callable(previous):
            loop.add_signal_handler(number, _on_signal, runtime, number, previous)


def _on_signal(runtime: Runtime, number: int, previous: Callable[[int, Any], Any]) -> None:
    if runtime.hub.draining:
        previous(number, None)  # a second signal: stop now
        return
    log.info("signal %d: draining before shutdown", number)
    runtime.shutdown.started_at = asyncio.get_running_loop().time()

    async def drain_then_stop() -> None:
        try:
            await runtime.hub.drain(grace_s=runtime.settings.shutdown_grace_s)
        finally:
            previous(number, None)

    runtime.supervisor.spawn(drain_then_stop(), name="drain")


async def stop_runtime(runtime: Runtime) -> None:
    """Let running work finish within what is left of the grace period, write what the store
    takes, spill the rest to disk, close everything. Bounded even when the store is down."""
    if runtime.shutdown.started_at is None:
        runtime.shutdown.started_at = asyncio.get_running_loop().time()
    runtime.summarizer.stop()
    runtime.leases.stop()
    runtime.retention.stop()
    grace_s = runtime.shutdown.remaining(runtime.settings.shutdown_grace_s)
    await runtime.supervisor.shutdown(grace_s=grace_s)
    unwritten = await runtime.writer.close(timeout_s=_WRITER_CLOSE_S)
    if unwritten:
        await asyncio.to_thread(write_spill, runtime.slot.spill_path, unwritten)
        log.error(
            "the store did not take %d events before shutdown: spilled to %s, replayed at the "
            "next start",
            len(unwritten),
            runtime.slot.spill_path,
        )
    await _stop_mcp(runtime)
    await runtime.supervisor.stop_services(timeout_s=_SERVICES_STOP_S)
    await runtime.provider.aclose()
    if runtime.bus is not None:
        await runtime.bus.aclose()
    await runtime.auth.aclose()
    with contextlib.suppress(TimeoutError, StoreError):
        async with asyncio.timeout(_STORE_CLOSE_S):
            await runtime.store.close()
    runtime.slot.release()
    # Last: the spans of the shutdown itself are exported too (bounded by the exporter's
    # own timeout; in a thread, the SDK blocks while it sends).
    await asyncio.to_thread(runtime.tracing.shutdown)
