"""Builds and closes everything the server runs on, in the app's lifespan (never at import time)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from app.database.base import Store
from app.database.factory import create_store
from app.services.auth import Authenticator
from app.services.conversation import ConversationDeps
from app.services.event_writer import EventWriter
from app.services.hub import SessionHub
from app.services.llm import create_provider
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


async def start_runtime(settings: Settings, *, tools: Sequence[ToolFunction]) -> Runtime:
    """Open the store, start the writer, pick the model, and resume pending summaries."""
    store = create_store(settings)
    await store.open()
    await store.upsert_user_profiles(DEMO_PROFILES)
    metrics = Metrics()
    supervisor = TaskSupervisor()
    writer = EventWriter(
        store, flush_interval_s=settings.write_flush_ms / 1000, batch_max=settings.write_batch_max
    )
    writer.start()
    provider = create_provider(settings)
    summarizer = Summarizer(
        store=store,
        provider=provider,
        supervisor=supervisor,
        metrics=metrics,
        model=settings.summary_model,
        concurrency=settings.summary_concurrency,
    )
    deps = ConversationDeps(
        store=store,
        writer=writer,
        provider=provider,
        tools=ToolRegistry(tools),
        response=ResponseConfig(
            system_prompt=settings.system_prompt,
            max_tool_rounds=settings.max_tool_rounds,
            tool_timeout_s=settings.tool_timeout_s,
        ),
        metrics=metrics,
        supervisor=supervisor,
        max_message_chars=settings.max_message_chars,
    )
    hub = SessionHub(deps, summarizer, resume_wait_s=settings.resume_wait_s)
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
        Authenticator(mode=settings.auth_mode, api_keys=settings.api_keys),
    )
    resumed = await summarizer.resume_pending()
    log.info("ready: store=%s model=%s pending_summaries=%d", store.kind, provider.model, resumed)
    return runtime


async def stop_runtime(runtime: Runtime) -> None:
    """Let running work finish within the grace period, flush every event, close everything."""
    await runtime.supervisor.shutdown(grace_s=runtime.settings.shutdown_grace_s)
    await runtime.writer.close()
    await runtime.provider.aclose()
    await runtime.store.close()
