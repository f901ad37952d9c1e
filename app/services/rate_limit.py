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
