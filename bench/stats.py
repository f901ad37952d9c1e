"""Turns what the sessions saw into the numbers the benchmark reports."""

from __future__ import annotations

import itertools
from typing import Any

from bench.clients import StreamResult
from bench.launcher import quantile
from bench.schedule import Schedule


def spread(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of `values`, rounded to µs when in ms."""
    return {
        "p50": round(quantile(values, 0.50), 3),
        "p99": round(quantile(values, 0.99), 3),
        "max": round(max(values, default=0.0), 3),
    }


def _lost_and_reordered(result: StreamResult, expected: int) -> tuple[int, int]:
    indexes = [index for index, _, _ in result.tokens]
    reordered = sum(1 for before, after in itertools.pairwise(indexes) if after < before)
    return expected - len(set(indexes) & set(range(expected))), reordered


def summarize(results: list[StreamResult], schedule: Schedule) -> dict[str, Any]:
    """Latency spreads (ms), losses, errors and delivered tokens/s of one streaming phase."""
    ok = [r for r in results if r.first_us]
    ttft = [(r.first_us - r.due_us) / 1000 - schedule.ttft_ms for r in ok]
    first_delay = [(r.tokens[0][2] - r.tokens[0][1]) / 1000 for r in ok]
    delays = [(recv - sent) / 1000 for r in ok for index, sent, recv in r.tokens if index > 0]
    lost = reordered = 0
    for result in results:
        missing, backwards = _lost_and_reordered(result, schedule.tokens)
        lost, reordered = lost + missing, reordered + backwards
    received = sum(len(r.tokens) for r in results)
    span_us = max((r.tokens[-1][2] for r in ok if r.tokens), default=0) - min(
        (r.due_us for r in results), default=0
    )
    errors = [r.error for r in results if r.error]
    mismatched = sum(1 for r in ok if r.done_text is not None and r.done_text != "".join(r.text))
    return {
        "sessions": len(results),
        "errors": len(errors),
        "error_examples": errors[:3],
        "ttft_ms": spread(ttft),
        "first_token_delay_ms": spread(first_delay),
        "token_delay_ms": spread(delays),
        "tokens_received": received,
        "tokens_lost": lost,
        "tokens_reordered": reordered,
        "done_text_mismatches": mismatched,
        "tokens_per_s": round(received / (span_us / 1e6), 1) if span_us > 0 else 0.0,
    }
