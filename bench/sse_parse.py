"""Micro-benchmark: CPU per upstream chunk and per request, the groq SDK versus httpx + orjson.

``python -m bench.sse_parse`` starts the fake upstream, then reads the same unpaced stream
(``--tokens`` chunks) through ``groq.AsyncGroq`` (what ``GroqProvider`` does) and through
``httpx`` lines + ``orjson`` (what the raw relay does), and makes ``--requests`` short requests
with a 20-message history each way. It prints process CPU µs per chunk and per request.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import groq
import httpx
import orjson

from bench import processes
from bench.schedule import Schedule

_HISTORY = [
    {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 20}
    for i in range(19)
]


def _messages(schedule: Schedule) -> list[dict[str, Any]]:
    return [*_HISTORY, {"role": "user", "content": schedule.message()}]


async def via_sdk(client: groq.AsyncGroq, schedule: Schedule) -> int:
    """Chunks with text, read as `GroqProvider` reads them."""
    stream = await client.chat.completions.create(
        model="bench", messages=cast(Any, _messages(schedule)), stream=True
    )
    count = 0
    async with stream:
        async for chunk in stream:
            count += sum(1 for choice in chunk.choices if choice.delta.content)
    return count


async def via_httpx(client: httpx.AsyncClient, url: str, schedule: Schedule) -> int:
    """Chunks with text, read as the raw relay reads them."""
    body = {"model": "bench", "stream": True, "messages": _messages(schedule)}
    count = 0
    async with client.stream("POST", url + "/openai/v1/chat/completions", json=body) as answer:
        async for line in answer.aiter_lines():
            if line.startswith("data: {"):
                choices = orjson.loads(line[6:]).get("choices") or [{}]
                count += bool(choices[0].get("delta", {}).get("content"))
    return count


async def cpu_us(work: Callable[[], Awaitable[int]], repeat: int) -> tuple[float, int]:
    """Process CPU µs spent on `repeat` runs of `work`, and the chunks they read."""
    before, total = time.process_time(), 0
    for _ in range(repeat):
        total += await work()
    return (time.process_time() - before) * 1e6, total


async def measure(url: str, tokens: int, requests: int) -> dict[str, float]:
    """µs per chunk (one long stream) and per request (one-token streams), each way."""
    long, short = Schedule(tokens=tokens, rate=1e6, ttft_ms=0), Schedule(tokens=1, ttft_ms=0)
    sdk = groq.AsyncGroq(api_key="bench", base_url=url, max_retries=0)
    plain = httpx.AsyncClient(timeout=30)
    try:
        await via_sdk(sdk, short), await via_httpx(plain, url, short)  # warm both up
        sdk_us, sdk_chunks = await cpu_us(lambda: via_sdk(sdk, long), 1)
        raw_us, raw_chunks = await cpu_us(lambda: via_httpx(plain, url, long), 1)
        sdk_req, _ = await cpu_us(lambda: via_sdk(sdk, short), requests)
        raw_req, _ = await cpu_us(lambda: via_httpx(plain, url, short), requests)
    finally:
        await sdk.close()
        await plain.aclose()
    return {
        "sdk_us_per_chunk": round(sdk_us / sdk_chunks, 1),
        "httpx_orjson_us_per_chunk": round(raw_us / raw_chunks, 1),
        "sdk_us_per_request": round(sdk_req / requests, 1),
        "httpx_orjson_us_per_request": round(raw_req / requests, 1),
    }


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    upstream, url = processes.start_upstream()
    try:
        result = asyncio.run(measure(url, args.tokens, args.requests))
    finally:
        processes.stop(upstream)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
