"""One scrape of /metrics covers every process of `uvicorn service.app:app --workers 2`: each writes
its HTTP counters to the run's directory (prometheus-client's multiprocess mode) and whichever
process answers the scrape reads them all."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.tenants import own_server

pytestmark = pytest.mark.integration


def served_by(server) -> set[str]:
    """The pids of the server's processes that have counted a request (one file each)."""
    runs = list(Path(tempfile.gettempdir()).glob(f"rlhf-metrics-{server.proc.pid}-*"))
    assert len(runs) == 1, runs  # the directory every worker of this run found for itself
    return {path.stem.removeprefix("counter_") for path in runs[0].glob("counter_*.db")}


def files_requests(text: str) -> float:
    # The route label is the route's template (here "/files", within the /v1 router).
    m = re.search(r'^rlhf_http_requests_total\{method="GET",route="(?:/v1)?/files",status="200"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_one_scrape_counts_the_requests_of_every_worker(start_api, make_database, tmp_path_factory):
    server = own_server(start_api, make_database, tmp_path_factory, workers=2)
    sent = 0
    # A new connection each time (no client keep-alive), so either process may accept it.
    while len(served_by(server)) < 2 or sent < 20:
        assert sent < 500, "one process took every connection"
        assert httpx.get(f"{server.url}/v1/files", timeout=30).status_code == 200
        sent += 1
    # A process counts a request just after its response went out: give the last one a moment.
    deadline = time.monotonic() + 10
    while (counted := files_requests(httpx.get(f"{server.url}/metrics", timeout=30).text)) < sent:
        assert time.monotonic() < deadline, (counted, sent)
        time.sleep(0.1)
    assert counted == sent
    for _ in range(4):  # and every scrape, whichever process answers it, says the same
        assert files_requests(httpx.get(f"{server.url}/metrics", timeout=30).text) == sent
