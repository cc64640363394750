"""Log lines for the API and the workers, in one format.

One JSON object per line on stderr (ts, level, logger, msg, request_id and, for the access line,
method, path, status, duration_ms; in a worker, the job_id of the job it is running).
RLHF_LOG_FORMAT=text for humans. The API (service/api/observability.py sets the request id) and the
worker (worker/celery_app.py, worker/tasks.py set the job id) both call `configure_logging`.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)

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
