"""Structured logs, request ids and HTTP metrics for every request.

- Logs: one JSON object per line on stderr (ts, level, logger, msg, request_id and, for the access
  line, method, path, status, duration_ms; in a worker, the job_id of the job it is running).
  RLHF_LOG_FORMAT=text for humans. The API and the worker (worker/celery_app.py) share the format.
- Request id: an incoming `x-request-id` is kept if it looks sane (it lets a proxy or a client
  correlate), otherwise a new one is made; it is returned in `x-request-id` and attached to every
  log line written while the request runs.
- HTTP metrics: request counts and latency by method, route template (never the raw path: ids
  would explode the label set) and status, rendered by service/routes/ops.py.

A pure ASGI middleware rather than BaseHTTPMiddleware, so streamed responses (server-sent events)
pass through untouched.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone

from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("service.access")

# ---- logging -------------------------------------------------------------------------------------

_FIELDS = ("method", "path", "status", "duration_ms", "job_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
               "request_id": getattr(record, "request_id", None) or request_id_var.get()}
        if job_id := job_id_var.get():
            out["job_id"] = job_id
        out.update({k: getattr(record, k) for k in _FIELDS if hasattr(record, k)})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str, fmt: str, logger_name: str = "service") -> None:
    """`logger_name` (the API: the `service` loggers, leaving uvicorn's own alone; a worker: the root
    logger, so Celery's and the engine's lines share the format) gets one handler on stderr."""
    logger = logging.getLogger(logger_name)
    for h in list(logger.handlers):
        if getattr(h, "_rlhf", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._rlhf = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    if logger_name:
        logger.propagate = False


# ---- HTTP metrics --------------------------------------------------------------------------------

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class HttpStats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count: dict[tuple[str, str, str], int] = defaultdict(int)
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.buckets: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.observed: dict[tuple[str, str], int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.count[(method, route, str(status))] += 1
            key = (method, route)
            self.seconds[key] += seconds
            self.observed[key] += 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[key][i] += 1


HTTP = HttpStats()

# ---- the middleware ------------------------------------------------------------------------------


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"


class RequestContext:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        start, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            path = scope.get("path", "")
            HTTP.observe(scope["method"], _route_template(scope), status, seconds)
            access_log.info("%s %s %s", scope["method"], path, status, extra={
                "request_id": rid, "method": scope["method"], "path": path, "status": status,
                "duration_ms": round(seconds * 1000, 2)})
            request_id_var.reset(token)
