"""Retry with exponential backoff and full jitter, shared by uploads and webhooks.

Full jitter (a delay drawn uniformly between 0 and the exponential bound) spreads the retries of
many workers hitting the same throttled store or receiver, as AWS's architecture note on backoff
recommends. The random source is injectable so tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` tries in all; before try n+1 wait up to `base_delay_s * 2**(n-1)`, capped."""

    attempts: int
    base_delay_s: float
    max_delay_s: float

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("delays must not be negative")

    def delay_s(self, failed_attempts: int, rng: Callable[[], float] = random.random) -> float:
        """The wait after `failed_attempts` failures (1 for the first retry), with full jitter."""
        bound = min(self.max_delay_s, self.base_delay_s * 2 ** max(0, failed_attempts - 1))
        return bound * rng()
