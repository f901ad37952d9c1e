"""How a benchmark stream is scheduled, and how each token carries its own send time.

The load client writes the schedule into the user message (``bench tokens=100 rate=50 ttft=50
tool=0``); the fake upstream reads it from the last user message of the request, so every
server under test forwards it unchanged and the upstream stays stateless.

Every token's text is ``<index>:<send time in µs> ``, stamped with ``time.monotonic_ns()`` at the
moment the upstream writes it. On Linux that clock is system-wide, so the load client (another
process) subtracts it from its own receive time to get the delivery delay of that one token.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

_FIELD = re.compile(r"(\w+)=([0-9.]+)")
BENCH_PREFIX = "bench "


@dataclass(frozen=True, slots=True)
class Schedule:
    """One upstream stream: `tokens` tokens, the first after `ttft_ms`, then `rate` per second."""

    tokens: int = 100
    rate: float = 50.0
    ttft_ms: float = 50.0
    tool: bool = False

    def message(self) -> str:
        """The user message that asks the upstream for this schedule."""
        tool = int(self.tool)
        pace = f"rate={self.rate:f} ttft={self.ttft_ms:f}"  # never exponent notation
        return f"{BENCH_PREFIX}tokens={self.tokens} {pace} tool={tool}"

    def due_s(self, index: int) -> float:
        """Seconds after the request at which token `index` is due."""
        return self.ttft_ms / 1000 + index / self.rate


def parse_schedule(text: str) -> Schedule:
    """The schedule a user message asks for; missing fields keep their defaults."""
    fields = {name: float(value) for name, value in _FIELD.findall(text)}
    default = Schedule()
    return Schedule(
        tokens=max(1, int(fields.get("tokens", default.tokens))),
        rate=max(0.1, fields.get("rate", default.rate)),
        ttft_ms=max(0.0, fields.get("ttft", default.ttft_ms)),
        tool=bool(fields.get("tool", 0)),
    )


def now_us() -> int:
    """The system-wide monotonic clock in microseconds (comparable across processes)."""
    return time.monotonic_ns() // 1000


def token_text(index: int) -> str:
    """A token stamped with its send time."""
    return f"{index}:{now_us()} "


def parse_token(text: str) -> list[tuple[int, int]]:
    """`(index, sent_us)` of every stamped token in a delta (coalesced deltas hold several)."""
    stamps = []
    for part in text.split():
        index, _, sent = part.partition(":")
        stamps.append((int(index), int(sent)))
    return stamps
