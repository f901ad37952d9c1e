"""`make bench`: the whole benchmark in one invocation, raw relay and our server side by side.

Starts the fake upstream, reads it directly (the baseline), then for each target starts
uvicorn in its own process, runs the load client (its own process) through the phases, and
stops it. Writes ``bench/results/latest.json``, ``latest.md`` (the table) and ``latest.png``.
``--profile`` instead records py-spy on our server during a streaming phase.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import processes
from bench.report import chart, markdown_table, profile_summary, target_row

RESULTS = processes.ROOT / "bench" / "results"
NO_DEFLATE = ["--ws-per-message-deflate", "false"]
FAST = ("--sessions", "10", "--rate", "500", "--tokens", "600", "--ramp", "0.5")
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BENCH_DB = "bench_conversations"
# The row the headline keys of latest.json come from: our server as `make run` serves it,
# and the raw relay under the same uvicorn flags.
PRIMARY, PRIMARY_RAW = "app", "raw"


@dataclass(frozen=True)
class Target:
    """One server configuration under test."""

    name: str
    kind: str  # "app" or "relay"
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # Variants skip the phases that would not tell anything new about them (and take time).
    phases: str = "streaming,idle,stalled"
    load: tuple[str, ...] = ()  # load-client options that replace the run's own


TARGETS = (
    Target("raw", "relay", NO_DEFLATE),
    # `background`: the streams run while as many other sessions end (summaries, titles).
    Target("app", "app", NO_DEFLATE, phases="streaming,idle,stalled,background"),
    Target("raw+deflate", "relay", phases="streaming,idle"),
    Target("app+deflate", "app", phases="streaming,idle"),
    Target("app+asyncio", "app", [*NO_DEFLATE, "--loop", "asyncio"], phases="streaming"),
    # What GC_FREEZE saves: full collections walking everything made at start.
    Target("app gc-unfrozen", "app", NO_DEFLATE, {"GC_FREEZE": "false"}, "streaming"),
    # Groq-speed streams (2 ms per token): what one frame per token costs, and what 20 ms
    # coalescing saves, on the raw relay; our server at the same load.
    Target("raw fast", "relay", NO_DEFLATE, phases="streaming", load=FAST),
    Target(
        "raw fast+coalesce20", "relay", NO_DEFLATE, {"BENCH_COALESCE_MS": "20"}, "streaming", FAST
    ),
    Target("app fast", "app", NO_DEFLATE, phases="streaming", load=FAST),
)


def load_options(args: argparse.Namespace) -> list[str]:
    """The schedule options every load-client run shares."""
    return [
        "--sessions", str(args.sessions), "--tokens", str(args.tokens), "--rate", str(args.rate),
        "--ttft", str(args.ttft), "--ramp", str(args.ramp), "--idle", str(args.idle),
    ]  # fmt: skip


def server_env(target: Target, upstream_url: str, workdir: Path) -> dict[str, str]:
    """The environment of one server: our settings (app) or the relay's upstream."""
    env = {
        "BENCH_TARGET": target.kind,
        "BENCH_UPSTREAM": upstream_url,
        "GROQ_API_KEY": "bench-key",
        "GROQ_BASE_URL": upstream_url,
        "DATABASE_URL": f"sqlite:///{workdir / (target.name + '.db')}",
        "LOG_LEVEL": "WARNING",
        "MAX_MESSAGES_PER_MINUTE": "100000",
        "SHUTDOWN_GRACE_S": "2",
    }
    return {**env, **target.env}


def run_target(
    target: Target, upstream_url: str, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Start the target, run every phase against it, stop it."""
    print(f"bench: {target.name} ...", flush=True)
    server = processes.Server(flags=target.flags, env=server_env(target, upstream_url, workdir))
    try:
        return processes.run_load(
            [
                "--ws-url",
                server.ws_url,
                "--server-pid",
                str(server.process.pid),
                "--lag-url",
                server.lag_url,
                "--phases",
                args.phases or target.phases,
                *load_options(args),
                *target.load,
            ]
        )
    finally:
        server.stop()


def postgres_targets(sessions: int) -> list[Target]:
    """Our server on a throwaway PostgreSQL database, when one is reachable (else none); and,
    at twice the sessions, on one worker and on two (`WORKERS=2`, both cores)."""
    url = postgres_url()
    if url is None:
        return []
    env = {"DATABASE_URL": url}
    double = ("--sessions", str(2 * sessions))
    return [
        Target("app+postgres", "app", NO_DEFLATE, env, "streaming,idle"),
        Target(f"app+postgres x{2 * sessions}", "app", NO_DEFLATE, env, "streaming", double),
        Target(
            f"app+postgres x{2 * sessions} 2 workers",
            "app",
            [*NO_DEFLATE, "--workers", "2"],
            env,
            "streaming",
            double,
        ),
    ]


def postgres_url() -> str | None:
    """A fresh throwaway PostgreSQL database's URL, when one is reachable (else None)."""
    try:
        import asyncpg
    except ImportError:
        return None

    async def recreate() -> None:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {PG_BENCH_DB}")
        finally:
            await admin.close()

    try:
        asyncio.run(recreate())
    except (OSError, asyncpg.PostgresError) as e:
        print(f"bench: no PostgreSQL target ({e})", flush=True)
        return None
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + PG_BENCH_DB


def headline(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The keys `latest.json` must have, from the primary row."""
    main, raw = rows[PRIMARY], rows[PRIMARY_RAW]
    keys = (
        "sessions", "ttft_added_ms_p50", "ttft_added_ms_p99", "itl_added_ms_p99",
        "cpu_per_mtok_s", "cpu_ratio_vs_raw", "idle_conn_kib", "tokens_lost",
    )  # fmt: skip
    return {"primary": PRIMARY, "baseline": PRIMARY_RAW, **{k: main.get(k) for k in keys}} | {
        "raw_cpu_per_mtok_s": raw["cpu_per_mtok_s"]
    }


def add_ratios(rows: dict[str, dict[str, Any]]) -> None:
    """CPU per token as a ratio to the raw relay run with the same compression setting."""
    for name, row in rows.items():
        raw = rows.get("raw+deflate" if "deflate" in name else "raw")
        if raw and raw["cpu_per_mtok_s"]:
            row["cpu_ratio_vs_raw"] = round(row["cpu_per_mtok_s"] / raw["cpu_per_mtok_s"], 2)


def store_write_numbers() -> Any:
    """The separate store benchmark's numbers (bench/store_writes.py), when it has run."""
    found = sorted(RESULTS.glob("store_writes*.json"))
    return orjson.loads(found[-1].read_bytes()) if found else None


def write_results(result: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    table = markdown_table(rows)
    (RESULTS / "latest.md").write_text(table)
    chart(rows, RESULTS / "latest.png")
    print(table, flush=True)


def benchmark(args: argparse.Namespace) -> None:
    """The full run (see the module docstring)."""
    began, load_before = time.monotonic(), os.getloadavg()
    chosen = args.targets.split(",") if args.targets else None
    targets = [t for t in TARGETS if chosen is None or t.name in chosen]
    if chosen is None or any(name.startswith("app+postgres") for name in chosen):
        pg = postgres_targets(args.sessions)
        targets += [t for t in pg if chosen is None or t.name in chosen]
    upstream, upstream_url = processes.start_upstream()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
            direct = processes.run_load(["--direct", upstream_url, *load_options(args)])
            raw_results = {
                t.name: run_target(t, upstream_url, Path(workdir), args) for t in targets
            }
    finally:
        processes.stop(upstream)
    baseline = direct["streaming"]
    rows = {name: target_row(name, phases, baseline) for name, phases in raw_results.items()}
    add_ratios(rows)
    result = {
        **(headline(rows) if PRIMARY in rows and PRIMARY_RAW in rows else {}),
        "rows": rows,
        "direct": direct["streaming"],
        "phases": raw_results,
        "store_writes": store_write_numbers(),
        "config": vars(args),
        "machine": {
            "cpus": _cpus(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "duration_s": round(time.monotonic() - began, 1),
    }
    write_results(result, list(rows.values()))
    print(f"bench: done in {result['duration_s']} s", flush=True)


def profile(args: argparse.Namespace) -> None:
    """py-spy on our server (the primary flags) through one longer streaming phase."""
    target = next(t for t in TARGETS if t.name == args.profile)
    upstream, upstream_url = processes.start_upstream()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
            env = server_env(target, upstream_url, Path(workdir))
            server = processes.Server(flags=target.flags, env=env)
            collapsed = RESULTS / f"profile-{target.name}.txt"
            spy = processes.start_profiler(server.process.pid, collapsed)
            try:
                processes.run_load(
                    [
                        "--ws-url",
                        server.ws_url,
                        "--server-pid",
                        str(server.process.pid),
                        "--lag-url",
                        server.lag_url,
                        *load_options(args),
                    ]
                )
            finally:
                processes.stop_profiler(spy)
                server.stop()
    finally:
        processes.stop(upstream)
    summary = profile_summary(collapsed)
    (RESULTS / f"profile-{target.name}.json").write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2)
    )
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def main() -> None:
    """Entry point: `python -m bench.run [--quick] [--targets a,b] [--profile app]`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--rate", type=float, default=15.0, help="tokens/s of each stream")
    parser.add_argument("--ttft", type=float, default=50.0, help="upstream TTFT in ms")
    parser.add_argument("--ramp", type=float, default=3.0, help="seconds over which streams start")
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--phases", default="", help="override every target's phases")
    parser.add_argument("--targets", default="", help="comma-separated target names (default all)")
    parser.add_argument("--profile", default="", help="profile this target instead")
    args = parser.parse_args()
    if args.profile:
        profile(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
