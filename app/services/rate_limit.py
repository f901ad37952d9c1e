"""Per-connection flood control: a token bucket, and a strike count for persistent abuse."""

from __future__ import annotations

import time
from enum import Enum


class Verdict(Enum):
    ALLOW = "allow"
    REFUSE = "refuse"  # answer `rate_limited`, keep the connection
    DISCONNECT = "disconnect"  # persistent abuse: close with 1008


class FrameRateLimiter:
    """Allows `per_minute` frames a minute (bursts up to that), then refuses; many refusals in a
    row mean the client ignores the errors, and it is disconnected."""

    def __init__(self, *, per_minute: int, strikes_to_disconnect: int = 30) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._tokens = self._capacity
        self._updated = time.monotonic()
        self._strikes = 0
        self._strikes_to_disconnect = strikes_to_disconnect

    def check(self) -> Verdict:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._strikes = 0
            return Verdict.ALLOW
        self._strikes += 1
        if self._strikes >= self._strikes_to_disconnect:
            return Verdict.DISCONNECT
        return Verdict.REFUSE


class ConnectionRateLimiter:
    """New connections a minute per client address (a token bucket each), on this instance.
    Buckets that are full again are dropped, so memory stays bounded by the recent addresses."""

    def __init__(self, *, per_minute: int, max_addresses: int = 100_000) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._max_addresses = max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, updated)

    def allow(self, address: str) -> bool:
        now = time.monotonic()
        tokens, updated = self._buckets.get(address, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - updated) * self._rate)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return False
        if len(self._buckets) >= self._max_addresses:
            self._forget_full(now)
        self._buckets[address] = (tokens - 1.0, now)
        return True

    def _forget_full(self, now: float) -> None:
        refill_s = self._capacity / self._rate
        self._buckets = {
            address: state for address, state in self._buckets.items() if now - state[1] < refill_s
        }
