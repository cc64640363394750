"""The rate limiter's moving window at a minute boundary, on both backends, with the clock set by
the test: a fixed one-minute window lets a key send its whole rate just before the minute turns
and again just after (twice the rate within a second); the moving window refuses the second half."""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter

import pytest

from service.api import limits
from service.api.errors import APIError
from service.shared.settings import Settings

pytestmark = pytest.mark.integration
RATE = 5


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FixedMinute:
    """What the limiter did before: one counter per key and calendar minute (Redis INCR)."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()

    def passes(self, now: float) -> bool:
        self.counts[int(now // 60)] += 1
        return self.counts[int(now // 60)] <= RATE


def passes(key: str, settings: Settings) -> bool:
    try:
        limits.check_rate(key, settings)
    except APIError as err:
        assert err.status == 429 and err.code == "rate_limit_exceeded"
        return False
    return True


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_minute_boundary_does_not_double_the_rate(backend, redis_url, monkeypatch):
    settings = Settings(rate_limit_per_minute=RATE, rate_limit_burst=RATE, rate_limit_backend=backend,
                        rate_limit_redis_url=redis_url)
    # Half a second before the next minute turns (near the real time: Redis expires keys by its own).
    clock = Clock((math.floor(time.time() / 60) + 1) * 60 - 0.5)
    monkeypatch.setattr(time, "time", clock)
    key = f"key-{uuid.uuid4().hex[:8]}"
    fixed = FixedMinute()

    assert [passes(key, settings) for _ in range(RATE)] == [True] * RATE
    assert all(fixed.passes(clock.now) for _ in range(RATE))
    clock.now += 1.5  # one second into the next minute
    assert all(fixed.passes(clock.now) for _ in range(RATE)), "a fixed window lets twice the rate through"
    assert [passes(key, settings) for _ in range(RATE)] == [False] * RATE  # the moving window does not
    with pytest.raises(APIError) as refused:
        limits.check_rate(key, settings)
    assert refused.value.headers["retry-after"] == "59"  # when the first request leaves the window

    clock.now += 59  # 60.5 s after the first requests: they have left the window
    assert [passes(key, settings) for _ in range(RATE)] == [True] * RATE
    assert not passes(key, settings)
