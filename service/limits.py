"""Request limits: a per-key rate limit and an early refusal of oversized bodies.

Rate limit, backend "memory" (default): a token bucket per key in this process; refills at
`rate_limit_per_minute`/60 tokens a second up to `rate_limit_burst`. With N API replicas a key
gets N times the rate, so multi-replica deployments set RLHF_RATE_LIMIT_BACKEND=redis: a fixed
one-minute window counted with INCR in Redis, shared by every replica.
"""

from __future__ import annotations

import math
import threading
import time
from functools import lru_cache

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import APIError, _respond
from service.settings import Settings, get_settings


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int):
        self.rate, self.burst = rate_per_s, burst
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        t = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (t - self.stamp) * self.rate)
        self.stamp = t
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


_buckets: dict[str, TokenBucket] = {}
_lock = threading.Lock()  # sync routes run in a thread pool


def _memory_wait(key_id: str, settings: Settings) -> float:
    with _lock:
        bucket = _buckets.get(key_id)
        if bucket is None:
            bucket = _buckets[key_id] = TokenBucket(settings.rate_limit_per_minute / 60,
                                                    max(1, settings.rate_limit_burst))
        return bucket.take()


@lru_cache
def _redis(url: str):
    import redis  # installed with celery[redis]

    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def _redis_wait(key_id: str, settings: Settings) -> float:
    url = settings.rate_limit_redis_url or settings.broker_url
    window = int(time.time() // 60)
    name = f"rlhf:ratelimit:{key_id}:{window}"
    pipe = _redis(url).pipeline()
    pipe.incr(name)
    pipe.expire(name, 120)
    count = pipe.execute()[0]
    if count <= settings.rate_limit_per_minute:
        return 0.0
    return 60 - time.time() % 60


def check_rate(key_id: str, settings: Settings) -> None:
    """Raise 429 with Retry-After when this key is over its rate."""
    if settings.rate_limit_per_minute <= 0:
        return
    wait = (_redis_wait if settings.rate_limit_backend == "redis" else _memory_wait)(key_id, settings)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise APIError(429, f"Rate limit reached: {settings.rate_limit_per_minute} requests per minute "
                            f"for this API key. Retry in {retry}s.", type="requests",
                       code="rate_limit_exceeded", headers={"retry-after": str(retry)})


class BodySizeLimit:
    """Refuse a body whose Content-Length is over the limit before a byte of it is read.

    File uploads may be `max_upload_bytes` plus multipart framing; every other body (JSON) has the
    smaller `max_json_body_bytes`. A chunked upload without Content-Length is still cut off by the
    upload route itself as it reads.
    """

    FRAMING = 64 * 1024

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None:
                err = self._check(scope, length)
                if err is not None:
                    await _respond(err)(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @classmethod
    def _check(cls, scope: Scope, raw: bytes) -> APIError | None:
        try:
            length = int(raw)
        except ValueError:
            return APIError(400, "Invalid Content-Length header.", param="content-length", code="invalid_value")
        settings = get_settings()
        if scope["path"].rstrip("/") == "/v1/files" and scope["method"] == "POST":
            limit, code, what = settings.max_upload_bytes + cls.FRAMING, "file_too_large", "File"
        else:
            limit, code, what = settings.max_json_body_bytes, "body_too_large", "Request body"
        if limit > 0 and length > limit:
            return APIError(413, f"{what} too large: the limit is {limit} bytes.", code=code,
                            param="file" if code == "file_too_large" else None)
        return None
