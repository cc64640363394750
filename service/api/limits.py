"""Request limits: a per-key rate limit, oversized bodies refused before or while they are read,
and caps on what one key (and one process) may hold open at once: uploads and event streams.

Rate limit, backend "memory" (default): a token bucket per key in this process; refills at
`rate_limit_per_minute`/60 tokens a second up to `rate_limit_burst`. With N API replicas a key
gets N times the rate, so multi-replica deployments set RLHF_RATE_LIMIT_BACKEND=redis: a fixed
one-minute window counted with INCR in Redis, shared by every replica.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import APIError, error_response
from service.shared.settings import Settings, get_settings


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


async def refuse(err: APIError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with the error envelope from ASGI code, where no exception handler runs."""
    await error_response(err)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuse an oversized body: from its Content-Length before a byte of it is read, or, for a
    chunked body that declares no length, as soon as the bytes received pass the limit.

    File uploads may be `max_upload_bytes` plus multipart framing; every other body (JSON) has the
    smaller `max_json_body_bytes`. When a chunked body passes the limit, reading it fails inside
    the app (FastAPI answers its form parser's error itself); that answer is dropped and the 413
    goes out instead, and the rest of the body is never read.
    """

    FRAMING = 64 * 1024

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, refusal = self._limit(scope)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await refuse(APIError(400, "Invalid Content-Length header.", param="content-length",
                                      code="invalid_value"), scope, receive, send)
                return
            if limit > 0 and declared > limit:
                await refuse(refusal, scope, receive, send)
                return
        if limit <= 0 or length is not None:  # the server itself stops a body at its Content-Length
            await self.app(scope, receive, send)
            return
        await self._counted(scope, receive, send, limit, refusal)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int, refusal: APIError) -> None:
        received, over, started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if not over:
                started = True
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if over and not started:
            await refuse(refusal, scope, receive, send)

    @classmethod
    def _limit(cls, scope: Scope) -> tuple[int, APIError]:
        settings = get_settings()
        if is_upload(scope):
            limit, code, what = settings.max_upload_bytes + cls.FRAMING, "file_too_large", "File"
        else:
            limit, code, what = settings.max_json_body_bytes, "body_too_large", "Request body"
        return limit, APIError(413, f"{what} too large: the limit is {limit} bytes.", code=code,
                               param="file" if code == "file_too_large" else None)


def is_upload(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"].rstrip("/") == "/v1/files"


class Slots:
    """Concurrent holders of something (an upload, an event stream), per key and in total.

    Used from the event loop only, so it needs no lock. A limit of 0 is no limit."""

    def __init__(self) -> None:
        self.by_key: Counter[str] = Counter()
        self.total = 0

    def take(self, key: str, per_key: int, total: int = 0) -> str | None:
        """Take a slot: None if taken, else the limit that refused it, "key" or "process"."""
        if per_key > 0 and self.by_key[key] >= per_key:
            return "key"
        if total > 0 and self.total >= total:
            return "process"
        self.by_key[key] += 1
        self.total += 1
        return None

    def give(self, key: str) -> None:
        self.by_key[key] -= 1
        if self.by_key[key] <= 0:
            del self.by_key[key]
        self.total -= 1


class UploadGate:
    """At most `max_concurrent_uploads_per_key` uploads of one key (429) and
    `max_concurrent_uploads` in this process (503) at a time, decided before the body is read.

    The caller is identified here, ahead of the route (`identify(request) -> key`, raising the
    401 APIError), because FastAPI reads a form body before it runs any dependency: counting in
    the route would let every refused or unauthenticated upload spool its whole body to disk first.
    """

    def __init__(self, app: ASGIApp, identify: Callable[[Request], str]):
        self.app, self.identify = app, identify
        self.slots = Slots()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_upload(scope):
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        try:
            key = await anyio.to_thread.run_sync(self.identify, Request(scope))
        except APIError as err:
            await refuse(err, scope, receive, send)
            return
        refused = self.slots.take(key, settings.max_concurrent_uploads_per_key, settings.max_concurrent_uploads)
        if refused:
            await refuse(_busy(refused, settings), scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.give(key)


def _busy(which: str, settings: Settings) -> APIError:
    if which == "key":
        return APIError(429, f"Too many uploads in progress: at most {settings.max_concurrent_uploads_per_key} "
                             "at a time per API key. Retry when one has finished.", type="requests",
                        code="too_many_concurrent_uploads", headers={"retry-after": "5"})
    return APIError(503, "The server is busy with other uploads. Retry in a few seconds.", type="server_error",
                    code="server_busy", headers={"retry-after": "5"})
