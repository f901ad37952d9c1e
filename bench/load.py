"""The load client, in its own process: runs the benchmark phases against one target.

``python -m bench.load --ws-url ws://…/ws --server-pid PID --phases streaming,idle,stalled``
prints one JSON object. ``--direct http://upstream`` instead reads the upstream directly (the
baseline). Arrivals are open-loop: session i sends its message at its scheduled time whatever
happened before, and every latency counts from that time (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import psutil
import uvloop
from websockets.asyncio.client import ClientConnection

from bench.clients import StalledClient, StreamResult, open_session, run_direct, run_session
from bench.schedule import Schedule, now_us
from bench.stats import summarize

_CONNECT_CONCURRENCY = 64
_LEAD_US = 200_000  # the first message is due this long after the phase starts
_MEMORY_POLL_S = 0.05
_WARM_UP_SESSIONS = 10


class ServerProbe:
    """The server process as the benchmark sees it from outside: CPU, memory, loop lag."""

    def __init__(self, pid: int, lag_url: str) -> None:
        self._process = psutil.Process(pid)
        self._lag_url = lag_url

    def _processes(self) -> list[psutil.Process]:
        """The server and its workers (`--workers N`: the parent only supervises them)."""
        return [self._process, *self._process.children(recursive=True)]

    def cpu_s(self) -> float:
        total = 0.0
        for process in self._processes():
            times = process.cpu_times()
            total += times.user + times.system
        return total

    def rss(self) -> int:
        return sum(int(process.memory_info().rss) for process in self._processes())

    async def lag(self) -> dict[str, Any]:
        """Loop-lag stats since the last call (the first call only resets them)."""
        async with httpx.AsyncClient() as client:
            answer = await client.get(self._lag_url)
        stats: dict[str, Any] = answer.json()
        return stats


async def open_many(url: str, count: int) -> tuple[list[ClientConnection], int]:
    """`count` ready sessions, opened a few at a time; also the number that failed."""
    gate = asyncio.Semaphore(_CONNECT_CONCURRENCY)

    async def one() -> ClientConnection:
        async with gate:
            return await open_session(url)

    outcomes = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    opened = [c for c in outcomes if isinstance(c, ClientConnection)]
    return opened, count - len(opened)


async def close_all(connections: list[ClientConnection]) -> None:
    await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


async def streaming_phase(
    start: Callable[[int, int], Awaitable[StreamResult]],
    args: argparse.Namespace,
    probe: ServerProbe | None,
) -> dict[str, Any]:
    """`args.sessions` streams arriving evenly over `args.ramp` s; server CPU and lag around it."""
    schedule = _schedule(args)
    if probe is not None:
        await probe.lag()
        cpu_before = probe.cpu_s()
    first_due = now_us() + _LEAD_US
    step_us = int(args.ramp * 1e6 / max(1, args.sessions))
    tasks = [start(i, first_due + i * step_us) for i in range(args.sessions)]
    summary = summarize(list(await asyncio.gather(*tasks)), schedule)
    if probe is not None:
        cpu_s = probe.cpu_s() - cpu_before
        summary["server_cpu_s"] = round(cpu_s, 3)
        summary["cpu_per_mtok_s"] = round(cpu_s / max(1, summary["tokens_received"]) * 1e6, 2)
        summary["loop_lag_ms"] = await probe.lag()
    return summary


async def ws_streaming(args: argparse.Namespace, probe: ServerProbe) -> dict[str, Any]:
    """One streaming phase over WebSockets (sessions open before their messages are due)."""
    connections, failed = await open_many(args.ws_url, args.sessions)
    schedule = _schedule(args)

    async def start(i: int, due_us: int) -> StreamResult:
        if i >= len(connections):
            return StreamResult(due_us=due_us, error="connect failed")
        return await run_session(connections[i], schedule, due_us)

    try:
        summary = await streaming_phase(start, args, probe)
    finally:
        await close_all(connections)
    summary["connect_errors"] = failed
    return summary


async def idle_phase(args: argparse.Namespace, probe: ServerProbe) -> dict[str, Any]:
    """Memory per idle connection, then a streaming phase while they stay open."""
    rss_before = probe.rss()
    idle, failed = await open_many(args.ws_url, args.idle)
    rss_after = probe.rss()
    try:
        streaming = await ws_streaming(args, probe)
    finally:
        still_open = sum(1 for c in idle if c.close_code is None)
        await close_all(idle)
    return {
        "idle": args.idle,
        "idle_connect_errors": failed,
        "idle_dropped": len(idle) - still_open,
        "idle_conn_kib": round((rss_after - rss_before) / max(1, len(idle)) / 1024, 2),
        "streaming": streaming,
    }


async def stalled_phase(args: argparse.Namespace, probe: ServerProbe) -> dict[str, Any]:
    """A streaming phase while one client that asked for a fast stream has stopped reading."""
    stalled = StalledClient(args.ws_url)
    long_stream = Schedule(tokens=int(args.stall_rate * 5), rate=args.stall_rate, ttft_ms=0)
    rss_before = probe.rss()
    await stalled.start(long_stream)
    peak = [rss_before]

    async def watch_memory() -> None:
        while True:
            peak[0] = max(peak[0], probe.rss())
            await asyncio.sleep(_MEMORY_POLL_S)

    watcher = asyncio.create_task(watch_memory(), name="memory-watch")
    try:
        streaming = await ws_streaming(args, probe)
    finally:
        watcher.cancel()
        stalled.stop()
    return {
        "stalled_stream": long_stream.message(),
        "server_rss_growth_kib": round((peak[0] - rss_before) / 1024, 1),
        "streaming": streaming,
    }


async def background_phase(args: argparse.Namespace, probe: ServerProbe) -> dict[str, Any]:
    """A streaming phase while as many other sessions end at once, halfway through its ramp:
    each of them had one short exchange (its title was made then), so each ending asks for its
    summary (a background model call and store writes) while the live streams run."""
    ending, failed = await open_many(args.ws_url, args.sessions)
    short = Schedule(tokens=3, rate=1000.0, ttft_ms=0.0)
    exchanges = await asyncio.gather(*(run_session(c, short, now_us()) for c in ending))

    async def end_them_midway() -> None:
        await asyncio.sleep(_LEAD_US / 1e6 + args.ramp / 2)
        await close_all(ending)  # all at once: as many summaries become due

    closer = asyncio.create_task(end_them_midway(), name="end-sessions")
    try:
        streaming = await ws_streaming(args, probe)
    finally:
        await closer
    return {
        "ending_sessions": len(ending),
        "ending_errors": failed + sum(1 for e in exchanges if e.error is not None),
        "streaming": streaming,
    }


async def warm_up(args: argparse.Namespace, probe: ServerProbe) -> None:
    """A few short streams first: imports, connection pools and caches are not what we measure."""
    short = argparse.Namespace(**{**vars(args), "sessions": _WARM_UP_SESSIONS, "tokens": 5})
    await ws_streaming(short, probe)


def _schedule(args: argparse.Namespace) -> Schedule:
    return Schedule(tokens=args.tokens, rate=args.rate, ttft_ms=args.ttft, tool=args.tool)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase asked for, in order."""
    if args.direct:
        schedule = _schedule(args)

        async def direct(_: int, due_us: int) -> StreamResult:
            return await run_direct(args.direct, schedule, due_us)

        return {"streaming": await streaming_phase(direct, args, None)}
    probe = ServerProbe(args.server_pid, args.lag_url)
    await warm_up(args, probe)
    phases = {
        "streaming": ws_streaming,
        "idle": idle_phase,
        "stalled": stalled_phase,
        "background": background_phase,
    }
    results: dict[str, Any] = {"phase_s": {}}
    for name in args.phases.split(","):
        began = time.monotonic()
        results[name] = await phases[name](args, probe)
        results["phase_s"][name] = round(time.monotonic() - began, 1)
    return results


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The load client's options (the runner passes them all)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ws-url")
    parser.add_argument("--direct", help="read this upstream URL directly instead")
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--lag-url")
    parser.add_argument("--phases", default="streaming")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--rate", type=float, default=15.0)
    parser.add_argument("--ttft", type=float, default=50.0)
    parser.add_argument("--tool", action="store_true")
    parser.add_argument("--ramp", type=float, default=3.0)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--stall-rate", type=float, default=500.0)
    return parser.parse_args(argv)


def main() -> None:
    """Entry point: run the phases, print one JSON object."""
    args = parse_args(sys.argv[1:])
    with contextlib.suppress(KeyboardInterrupt):
        result = uvloop.run(run(args))
        sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
