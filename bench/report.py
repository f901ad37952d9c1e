"""From raw phase results to the reported rows, the Markdown table, the chart and the profile."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_NUMBERLESS = re.compile(r":\d+\)")


def _added(phase: dict[str, Any], direct: dict[str, Any], metric: str, q: str) -> float:
    return round(float(phase[metric][q]) - float(direct[metric][q]), 3)


def target_row(name: str, phases: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
    """The reported numbers of one target, latency added to the direct read of the upstream."""
    streaming = phases["streaming"]
    row: dict[str, Any] = {"target": name, "sessions": streaming["sessions"]}
    for q in ("p50", "p99", "max"):
        row[f"ttft_added_ms_{q}"] = _added(streaming, direct, "ttft_ms", q)
        row[f"itl_added_ms_{q}"] = _added(streaming, direct, "token_delay_ms", q)
    row["tokens_per_s"] = streaming["tokens_per_s"]
    row["cpu_per_mtok_s"] = streaming["cpu_per_mtok_s"]
    row["loop_lag_ms_p99"] = round(streaming["loop_lag_ms"]["p99_ms"], 3)
    row["loop_lag_ms_max"] = round(streaming["loop_lag_ms"]["max_ms"], 3)
    runs = [streaming]
    if "idle" in phases:
        idle = phases["idle"]
        runs.append(idle["streaming"])
        row["idle_conn_kib"] = idle["idle_conn_kib"]
        row["idle_plus_streaming_errors"] = (
            idle["idle_connect_errors"] + idle["idle_dropped"] + _errors(idle["streaming"])
        )
        row["idle_plus_streaming_itl_added_ms_p99"] = _added(
            idle["streaming"], direct, "token_delay_ms", "p99"
        )
    if "stalled" in phases:
        stalled = phases["stalled"]
        runs.append(stalled["streaming"])
        others = stalled["streaming"]["token_delay_ms"]["p99"]
        row["stall_added_p99_ms"] = round(others - streaming["token_delay_ms"]["p99"], 3)
        row["stall_rss_growth_kib"] = stalled["server_rss_growth_kib"]
    if "background" in phases:
        background = phases["background"]
        runs.append(background["streaming"])
        row["background_itl_added_ms_p99"] = _added(
            background["streaming"], direct, "token_delay_ms", "p99"
        )
        row["background_ttft_added_ms_p99"] = _added(
            background["streaming"], direct, "ttft_ms", "p99"
        )
        row["errors_background_sessions"] = background["ending_errors"]
    row["tokens_lost"] = sum(run["tokens_lost"] for run in runs)
    row["tokens_reordered"] = sum(run["tokens_reordered"] for run in runs)
    row["errors"] = sum(_errors(run) for run in runs)
    return row


def _errors(run: dict[str, Any]) -> int:
    return int(run["errors"] + run.get("connect_errors", 0) + run["done_text_mismatches"])


_COLUMNS = (
    ("target", "target"),
    ("ttft_added_ms_p50", "TTFT+ p50"),
    ("ttft_added_ms_p99", "TTFT+ p99"),
    ("itl_added_ms_p50", "token+ p50"),
    ("itl_added_ms_p99", "token+ p99"),
    ("itl_added_ms_max", "token+ max"),
    ("tokens_per_s", "tok/s"),
    ("cpu_per_mtok_s", "CPU s/Mtok"),
    ("cpu_ratio_vs_raw", "CPU vs raw"),
    ("idle_conn_kib", "KiB/idle conn"),
    ("loop_lag_ms_p99", "loop lag p99"),
    ("idle_plus_streaming_itl_added_ms_p99", "token+ p99 (1000 idle)"),
    ("stall_added_p99_ms", "stall: others' p99 +"),
    ("stall_rss_growth_kib", "stall: RSS + KiB"),
    ("background_ttft_added_ms_p99", "TTFT+ p99 (100 ending)"),
    ("background_itl_added_ms_p99", "token+ p99 (100 ending)"),
    ("tokens_lost", "lost"),
    ("tokens_reordered", "reordered"),
    ("errors", "errors"),
)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (times in ms)."""
    lines = [
        "| " + " | ".join(title for _, title in _COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    for row in rows:
        cells = [_cell(row.get(key)) for key, _ in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def chart(rows: list[dict[str, Any]], output: Path) -> None:
    """Four panels: added TTFT, added per-token delay, CPU per token, memory per idle connection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["target"] for row in rows]
    figure, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    panels = (
        (axes[0][0], "added TTFT (ms)", ("ttft_added_ms_p50", "ttft_added_ms_p99")),
        (axes[0][1], "added per-token delay (ms)", ("itl_added_ms_p50", "itl_added_ms_p99")),
        (axes[1][0], "server CPU-seconds per million tokens", ("cpu_per_mtok_s",)),
        (axes[1][1], "KiB per idle connection", ("idle_conn_kib",)),
    )
    for axis, title, keys in panels:
        width = 0.8 / len(keys)
        for offset, key in enumerate(keys):
            values = [float(row.get(key) or 0.0) for row in rows]
            positions = [i + offset * width for i in range(len(rows))]
            axis.bar(positions, values, width=width, label=key.rsplit("_", 1)[-1])
        axis.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(rows))], names)
        axis.tick_params(axis="x", labelrotation=20)
        axis.set_title(title)
        if len(keys) > 1:
            axis.legend()
    figure.suptitle(f"{rows[0]['sessions']} concurrent streams, raw relay in the same run")
    figure.savefig(output, dpi=90)
    plt.close(figure)


def profile_summary(collapsed: Path, *, top: int = 20) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_NUMBERLESS.sub(")", frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    share = 100 / max(1, total)
    return {
        "samples": total,
        "self_pct": [(name, round(n * share, 1)) for name, n in own.most_common(top)],
        "inclusive_pct": [(name, round(n * share, 1)) for name, n in inclusive.most_common(top)],
    }
