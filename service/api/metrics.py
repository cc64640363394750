"""HTTP metrics with prometheus-client, in its multiprocess mode: under `uvicorn --workers N` every
API process writes its counters to files in one directory and a scrape of any process reads them
all, so one `/metrics` answer covers the whole server (service/api/routes/ops.py renders it).

The directory is PROMETHEUS_MULTIPROC_DIR when the operator sets it (empty it before each start,
as prometheus-client requires). Otherwise each run of the server gets its own, made here: uvicorn's
supervisor runs none of our code before it spawns the workers, so each worker derives the same
name from the process that started it, `rlhf-metrics-<pid>-<start time>` in the temp directory.
The start time keeps a recycled pid (uvicorn is pid 1 in every container restart) from picking up
a dead run's counts, and a start sweeps away the directories of runs that are gone.

prometheus-client chooses between one process and many when it is first imported, so this module
sets the directory before it imports the library, and the rest of the API imports the library
only through this module.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

_PREFIX = "rlhf-metrics-"


def _run_key(pid: int) -> str | None:
    """`pid-starttime` of a live process (Linux), its pid elsewhere; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The kernel's start time is field 22; the command name (field 2) may hold spaces.
            return f"{pid}-{f.read().rsplit(')', 1)[1].split()[19]}"
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    try:  # no /proc: liveness alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return str(pid)


def _sweep(base: Path) -> None:
    """Delete our directories of runs whose process has ended."""
    for path in base.glob(f"{_PREFIX}*"):
        key = path.name.removeprefix(_PREFIX)
        pid = key.split("-", 1)[0]
        try:
            owned = path.lstat().st_uid == os.getuid()
        except OSError:
            continue
        if owned and pid.isdigit() and _run_key(int(pid)) != key:
            shutil.rmtree(path, ignore_errors=True)


def _run_directory() -> str:
    # The process that started this set of API processes: uvicorn's supervisor for a spawned
    # worker, else this process itself (a single `uvicorn service.app:app`).
    parent = multiprocessing.parent_process()
    run = _run_key(parent.pid if parent is not None else os.getpid()) or str(os.getpid())
    base = Path(tempfile.gettempdir())
    _sweep(base)
    path = base / f"{_PREFIX}{run}"
    path.mkdir(mode=0o700, exist_ok=True)
    # The temp directory is shared: refuse a name another user (or a symlink) got to first.
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeError(f"{path} is not a directory of this user; set PROMETHEUS_MULTIPROC_DIR")
    return str(path)


_given = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
# The operator's directory is kept. One made here belongs to one run: inherited by a server that
# a process holding one started (a test run that imported this module), it is not that server's.
if not _given or Path(_given).name.startswith(_PREFIX):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _run_directory()

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest  # noqa: E402
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4  # noqa: E402
from prometheus_client.metrics_core import GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

# The rest of the API takes these from here, so nothing imports prometheus_client before the above.
__all__ = ["CONTENT_TYPE", "GaugeMetricFamily", "exposition", "observe"]
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what generate_latest writes

# Route templates, never raw paths: ids would explode the label set.
REQUESTS = Counter("rlhf_http_requests", "HTTP requests by method, route and status.",
                   ["method", "route", "status"])
LATENCY = Histogram("rlhf_http_request_duration_seconds", "HTTP request latency.", ["method", "route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def observe(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


class _Snapshot:
    """Metric families computed for one scrape (the job and queue gauges), as a collector."""

    def __init__(self, families: Iterable[Metric]):
        self.families = list(families)

    def collect(self) -> list[Metric]:
        return self.families


def exposition(families: Iterable[Metric]) -> bytes:
    """The text of one scrape: `families`, then the HTTP metrics of every API process of this run."""
    registry = CollectorRegistry()
    registry.register(_Snapshot(families))
    MultiProcessCollector(registry)
    return generate_latest(registry)
