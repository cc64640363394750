"""Request ids, the access log and HTTP metrics for every request.

- Request id: an incoming `x-request-id` is kept if it looks sane (it lets a proxy or a client
  correlate), otherwise a new one is made; it is returned in `x-request-id` and attached to every
  log line written while the request runs (service/shared/logging.py writes the lines).
- HTTP metrics: request counts and latency by method, route template and status, recorded in
  service/api/metrics.py (prometheus-client) and rendered by service/api/routes/ops.py.

A pure ASGI middleware rather than BaseHTTPMiddleware, so streamed responses (server-sent events)
pass through untouched.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import metrics
from service.shared.logging import request_id_var

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("service.access")


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
            metrics.observe(scope["method"], _route_template(scope), status, seconds)
            access_log.info("%s %s %s", scope["method"], path, status, extra={
                "request_id": rid, "method": scope["method"], "path": path, "status": status,
                "duration_ms": round(seconds * 1000, 2)})
            request_id_var.reset(token)
