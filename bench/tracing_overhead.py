"""CPU the tracing seams cost per turn, off (no endpoint) and on (spans recorded and batched).

One turn's seams, as the server opens them: a response, two model requests of TOKENS streamed
tokens each, one tool call and one store batch, with a model that answers at once. Tracing on
exports to an exporter that drops everything, so what is measured is our side and the SDK's,
not a network. Not part of the test
suite:
    .venv/bin/python -m bench.tracing_overhead
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from app.services.llm.base import (
    ChatMessage,
    Finished,
    LLMEvent,
    LLMProvider,
    ModelRequest,
    StatusListener,
    TextDelta,
    ToolDefinition,
    UserPart,
)
from app.services.tracing import Tracing

TOKENS = 200
TURNS = 1_000
ROUNDS = 3


class DroppingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class InstantModel:
    """A provider that streams TOKENS deltas at once."""

    model = "bench-model"

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolDefinition] = (),
        model: str | None = None,
        on_status: StatusListener | None = None,
    ) -> AsyncGenerator[LLMEvent, None]:
        for _ in range(TOKENS):
            yield TextDelta("tok ")
        yield Finished("stop", {"prompt_tokens": 10, "completion_tokens": TOKENS}, self.model)

    async def aclose(self) -> None:
        pass


async def turn(tracing: Tracing, provider: LLMProvider, *, requests: int) -> None:
    with tracing.response(session_id="s", owner="o", response_id="r", model="m"):
        for _ in range(requests):
            async for _event in provider.stream([ModelRequest([UserPart("hi")])]):
                pass
        with tracing.tool_call(
            name="calculate", call_id="c", arguments={}, session_id="s", owner="o"
        ) as tool:
            tool.finished(result=1, error=None)
        origin = tracing.origin()
        with tracing.store_batch(session_ids=["s"], origins=[origin], size=5):
            pass


async def cpu_per_turn(tracing: Tracing, *, requests: int) -> float:
    provider = tracing.traced_provider(InstantModel(), provider_name="groq")
    best = float("inf")
    for _ in range(ROUNDS):  # the least disturbed round of a shared machine
        started = time.process_time()
        for _ in range(TURNS):
            await turn(tracing, provider, requests=requests)
        best = min(best, (time.process_time() - started) / TURNS)
    return best


async def main() -> None:
    sdk = TracerProvider()
    sdk.add_span_processor(BatchSpanProcessor(DroppingExporter()))
    on = Tracing(sdk.get_tracer("bench"), provider=sdk)
    off = Tracing.disabled()
    await cpu_per_turn(off, requests=2)  # warm-up
    seams = {name: await cpu_per_turn(t, requests=0) for name, t in (("off", off), ("on", on))}
    turns = {name: await cpu_per_turn(t, requests=2) for name, t in (("off", off), ("on", on))}
    sdk.shutdown()
    tokens = 2 * TOKENS
    print(f"best of {ROUNDS} x {TURNS} turns; a turn: 2 model requests of {TOKENS} tokens,")
    print("1 tool call, 1 store batch, inside 1 response")
    for name in ("off", "on"):
        print(
            f"tracing {name:<3}  seams {seams[name] * 1e6:7.1f} µs CPU per turn; "
            f"whole turn {turns[name] * 1e6:7.1f} µs ({turns[name] / tokens * 1e6:.2f} µs/token)"
        )
    extra = (turns["on"] - turns["off"]) / tokens * 1e6
    print(f"tracing on adds {extra:.2f} µs CPU per streamed token (the wrapper's generator hop)")


if __name__ == "__main__":
    asyncio.run(main())
