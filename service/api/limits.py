"""Request limits: a per-key rate limit, oversized bodies refused before or while they are read,
and caps on what one key (and one process) may hold open at once: uploads and event streams.

Rate limit: moving windows from the `limits` package, never a fixed minute (which lets a key send
twice its rate across a minute boundary): at most `rate_limit_per_minute` requests of one key in
any 60 seconds and, of those, at most `rate_limit_burst` in any one second (or the minute's rate
per second, if that is more: a small burst never lowers the rate). Backend "memory" (default)
keeps the windows in this process, so N API replicas give a key N times the rate;
RLHF_RATE_LIMIT_BACKEND=redis keeps them in Redis, shared by every replica.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

import anyio
from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import APIError, error_response
from service.shared.settings import Settings, get_settings


@lru_cache
def _limiter(storage_uri: str) -> MovingWindowRateLimiter:
    """One limiter per storage for the life of the process (for Redis: one connection pool)."""
    if storage_uri == "memory://":
        return MovingWindowRateLimiter(storage_from_string(storage_uri))
    # Short timeouts: a request must not hang on a Redis that does not answer.
    return MovingWindowRateLimiter(storage_from_string(storage_uri, key_prefix="rlhf:ratelimit",
                                                       socket_timeout=1, socket_connect_timeout=1))


def _windows(settings: Settings) -> tuple[RateLimitItem, RateLimitItem]:
    # The burst never undercuts the rate itself: a second may always hold its share of the minute.
    per_second = max(settings.rate_limit_burst, math.ceil(settings.rate_limit_per_minute / 60))
    return RateLimitItemPerSecond(per_second), RateLimitItemPerMinute(settings.rate_limit_per_minute)


def check_rate(key_id: str, settings: Settings) -> None:
    """Raise 429 with Retry-After when this key is over its rate."""
    if settings.rate_limit_per_minute <= 0:
        return
    shared = settings.rate_limit_backend == "redis"
    limiter = _limiter((settings.rate_limit_redis_url or settings.broker_url) if shared else "memory://")
    windows = _windows(settings)
    # Every window is asked before any counts the request, so a refused request is counted in none
    # and its Retry-After is the refusing window's. A hit can still lose a race with a concurrent
    # request of the same key: it is refused then.
    for window in windows:
        if not limiter.test(window, key_id):
            raise _over(limiter, window, key_id)
    for window in windows:
        if not limiter.hit(window, key_id):
            raise _over(limiter, window, key_id)


def _over(limiter: MovingWindowRateLimiter, window: RateLimitItem, key_id: str) -> APIError:
    # A moving window frees a slot when its oldest request leaves it.
    retry = max(1, math.ceil(limiter.get_window_stats(window, key_id).reset_time - time.time()))
    return APIError(429, f"Rate limit reached: {window.amount} requests per {window.GRANULARITY.name} "
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
