"""Builds and closes everything the server runs on, in the app's lifespan (never at import time)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.database.base import Store
from app.database.factory import create_store
from app.services.auth import Authenticator, create_authenticator
from app.services.context import ContextBudget, context_window_of
from app.services.conversation import ConversationDeps
from app.services.event_writer import EventWriter
from app.services.hub import SessionHub
from app.services.leases import LeaseKeeper
from app.services.llm import create_provider, summary_model
from app.services.llm.base import LLMProvider
from app.services.metrics import Metrics
from app.services.runner import ResponseConfig
from app.services.sessions import SessionDirectory
from app.services.summaries import Summarizer
from app.services.supervisor import TaskSupervisor
from app.services.tools import DEMO_PROFILES, ToolFunction, ToolRegistry
from app.settings import Settings

log = logging.getLogger(__name__)


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


async def start_runtime(settings: Settings, *, tools: Sequence[ToolFunction]) -> Runtime:
    """Open the store, start the writer, pick the model, and resume pending summaries."""
    store = create_store(settings)
    await store.open()
    await store.upsert_user_profiles(DEMO_PROFILES)
    metrics = Metrics()
    supervisor = TaskSupervisor()
    writer = EventWriter(
        store,
        flush_interval_s=settings.write_flush_ms / 1000,
        batch_max=settings.write_batch_max,
        buffer_max=settings.write_buffer_max,
        on_write=metrics.store_write_seconds.observe,
    )
    writer.start()
    provider = create_provider(settings)
    summaries_model = summary_model(settings, provider)
    summarizer = Summarizer(
        store=store,
        provider=provider,
        supervisor=supervisor,
        metrics=metrics,
        model=summaries_model,
        title_model=settings.title_model or summaries_model,
        window_tokens=settings.summary_window_tokens or context_window_of(summaries_model),
        concurrency=settings.summary_concurrency,
        poll_s=settings.summary_poll_s,
        claim_timeout_s=settings.summary_claim_timeout_s,
    )
    context_max_tokens = settings.context_max_tokens or (
        context_window_of(provider.model) - settings.llm_max_completion_tokens
    )
    deps = ConversationDeps(
        store=store,
        writer=writer,
        provider=provider,
        tools=ToolRegistry(tools),
        response=ResponseConfig(
            max_tool_rounds=settings.max_tool_rounds, tool_timeout_s=settings.tool_timeout_s
        ),
        context=ContextBudget(
            max_tokens=context_max_tokens,
            system_prompt=settings.system_prompt,
            fold=summarizer.fold,
        ),
        summarizer=summarizer,
        metrics=metrics,
        supervisor=supervisor,
        max_message_chars=settings.max_message_chars,
    )
    leases = LeaseKeeper(store, metrics, ttl_s=settings.lease_ttl_s)
    hub = SessionHub(deps, summarizer, leases, resume_wait_s=settings.resume_wait_s)
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
    )
    resumed = await summarizer.resume_pending()
    # Both loops are owned by the supervisor and end on stop (the heartbeat once every lease
    # is released), so other instances see this one's sessions free as soon as it is gone.
    supervisor.spawn(leases.run(), name="lease-heartbeat")
    supervisor.spawn(summarizer.poll(), name="summary-poll")
    log.info(
        "ready: store=%s model=%s instance=%s pending_summaries=%d",
        store.kind,
        provider.model,
        leases.instance_id,
        resumed,
    )
    return runtime


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

    async def drain_then_stop() -> None:
        try:
            await runtime.hub.drain(grace_s=runtime.settings.shutdown_grace_s)
        finally:
            previous(number, None)

    runtime.supervisor.spawn(drain_then_stop(), name="drain")


async def stop_runtime(runtime: Runtime) -> None:
    """Let running work finish within the grace period, flush every event, close everything."""
    runtime.summarizer.stop()
    runtime.leases.stop()
    await runtime.supervisor.shutdown(grace_s=runtime.settings.shutdown_grace_s)
    await runtime.writer.close()
    await runtime.provider.aclose()
    await runtime.auth.aclose()
    await runtime.store.close()
