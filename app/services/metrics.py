"""Prometheus metrics, one registry per app (nothing is built at import time)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """The server's counters and histograms; `render()` gives the text format for `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.open_connections = Gauge(
            "chat_open_connections", "WebSocket connections open now", registry=self.registry
        )
        self.responses = Counter(
            "chat_responses", "Responses ended, by status", ["status"], registry=self.registry
        )
        self.time_to_first_token = Histogram(
            "chat_time_to_first_token_seconds",
            "From user message to the first streamed text",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )
        self.tokens_streamed = Counter(
            "chat_tokens_streamed", "Text deltas streamed to clients", registry=self.registry
        )
        self.tool_calls = Histogram(
            "chat_tool_call_seconds",
            "Tool call durations, by tool and outcome",
            ["tool", "outcome"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30),
            registry=self.registry,
        )
        self.summaries = Counter(
            "chat_summaries", "Session summaries, by outcome", ["outcome"], registry=self.registry
        )
        self.store_write_seconds = Histogram(
            "chat_store_write_seconds",
            "Duration of one batched event write",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        self.store_queue_depth = Gauge(
            "chat_store_queue_depth", "Events waiting to be written", registry=self.registry
        )
        self.store_refusals = Counter(
            "chat_store_refused_events",
            "Events the store refused for good (lost lease, conflict), by session holding",
            registry=self.registry,
        )
        self.service_restarts = Gauge(
            "chat_service_restarts",
            "Times a background service (event writer, lease heartbeat, summary poll) failed "
            "and was restarted",
            ["service"],
            registry=self.registry,
        )

        # Scale-out (docs/deployment.md): leases held here, connections refused because another
        # instance holds the session, heartbeats that failed, background jobs claimed here.
        self.session_leases = Gauge(
            "chat_session_leases", "Session leases this instance holds", registry=self.registry
        )
        self.lease_refusals = Counter(
            "chat_lease_refusals",
            "Lease requests refused because another instance holds the session, by its state",
            ["state"],
            registry=self.registry,
        )
        self.lease_renew_failures = Counter(
            "chat_lease_renew_failures",
            "Heartbeats that could not renew every lease this instance holds",
            registry=self.registry,
        )
        self.usage_refusals = Counter(
            "chat_usage_refusals",
            "User messages refused over an owner's usage limit, by limit",
            ["limit"],
            registry=self.registry,
        )
        self.connection_refusals = Counter(
            "chat_connection_refusals",
            "New connections refused over CONNECTIONS_PER_MINUTE_PER_IP",
            registry=self.registry,
        )
        self.jobs_claimed = Counter(
            "chat_background_jobs_claimed",
            "Summaries and titles claimed by this instance, by kind",
            ["kind"],
            registry=self.registry,
        )

        # MCP servers (docs/tools.md): calls by server, tool and outcome (count, errors,
        # latency), whether each server is up, and how often it was restarted.
        self.mcp_tool_calls = Histogram(
            "chat_mcp_tool_call_seconds",
            "MCP tool call durations, by server, tool and outcome",
            ["server", "tool", "outcome"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30),
            registry=self.registry,
        )
        self.mcp_server_up = Gauge(
            "chat_mcp_server_up",
            "1 while an MCP server answers, 0 while it is starting or being restarted",
            ["server"],
            registry=self.registry,
        )
        self.mcp_server_restarts = Gauge(
            "chat_mcp_server_restarts",
            "Times an MCP server was restarted or reconnected after failing",
            ["server"],
            registry=self.registry,
        )

        # Joining a running response (docs/deployment.md): where joins were served, frames the
        # message bus could not take.
        self.joins = Counter(
            "chat_response_joins",
            "Resumes that joined a running response: here (local), through the bus (remote), "
            "or by waiting for the stored result (fallback)",
            ["where"],
            registry=self.registry,
        )
        self.bus_dropped_frames = Counter(
            "chat_bus_dropped_frames",
            "Response frames not published to the message bus (its buffer was full or it failed)",
            registry=self.registry,
        )

    def observe_mcp_call(self, server: str, tool: str, *, ok: bool, seconds: float) -> None:
        outcome = "ok" if ok else "error"
        self.mcp_tool_calls.labels(server=server, tool=tool, outcome=outcome).observe(seconds)

    def observe_tool(self, name: str, *, ok: bool, seconds: float) -> None:
        self.tool_calls.labels(tool=name, outcome="ok" if ok else "error").observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
