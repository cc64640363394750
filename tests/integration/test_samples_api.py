"""GET /v1/fine_tuning/jobs/{id}/samples over rows the worker's reporter writes: the list shape,
step order with the base at step 0, pagination, a replay overwriting, and tenancy. The replies
themselves come from the engine (tests/unit/test_samples.py; a real run: test_e2e_training.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from service.shared.store.models import EventRow
from service.shared.store.session import session_scope
from tests.integration.helpers import assert_envelope, dpo_body, upload
from tests.integration.tenants import make_tenant, own_server
from worker.reporter import DbReporter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(start_api, make_database, tmp_path_factory):
    return own_server(start_api, make_database, tmp_path_factory)


def items(reply: str, n: int = 2, dialogue: bool = False) -> list[dict]:
    return [{"index": i, "prompt": [{"role": "user", "content": f"question {i}"}], "completion": f"{reply} {i}",
             "dialogue": [{"role": "assistant", "content": f"{reply} {i}"}, {"role": "user", "content": "more?"},
                          {"role": "assistant", "content": "yes"}] if dialogue else None} for i in range(n)]


def test_samples_by_step_paginated_replayed_and_private(server):
    a, b = make_tenant(server), make_tenant(server)
    db_url = server.settings["database_url"]
    with a.client(server) as ca, b.client(server) as cb:
        job_id = ca.post("/v1/fine_tuning/jobs", json=dpo_body(upload(ca).json()["id"])).json()["id"]
        url = f"/v1/fine_tuning/jobs/{job_id}/samples"
        assert ca.get(url).json() == {"object": "list", "data": [], "has_more": False, "first_id": None,
                                      "last_id": None}

        reporter = DbReporter(db_url, job_id, store=None)  # no lease owner: writes are not fenced
        reporter.samples(0, items("base"))
        reporter.samples(2, items("two"))
        reporter.samples(4, items("four", dialogue=True))
        page = ca.get(url).json()
        assert page["object"] == "list" and not page["has_more"]
        assert [(s["step"], s["index"]) for s in page["data"]] == [(0, 0), (0, 1), (2, 0), (2, 1), (4, 0), (4, 1)]
        first = page["data"][0]
        assert first["object"] == "fine_tuning.job.sample" and first["fine_tuning_job_id"] == job_id
        assert first["prompt"] == [{"role": "user", "content": "question 0"}]
        assert first["completion"] == "base 0" and first["dialogue"] is None and first["created_at"] > 0
        assert [m["role"] for m in page["data"][4]["dialogue"]] == ["assistant", "user", "assistant"]

        # Pages follow the list's order: `after` the last id seen.
        one = ca.get(url, params={"limit": 4}).json()
        assert one["has_more"] and one["last_id"] == page["data"][3]["id"]
        two = ca.get(url, params={"limit": 4, "after": one["last_id"]}).json()
        assert [s["id"] for s in one["data"] + two["data"]] == [s["id"] for s in page["data"]] and not two["has_more"]
        assert_envelope(ca.get(url, params={"after": "ftsample-nope"}), 400, param="after")

        # A resumed job replays step 2: its samples replace step 2's and the later step's, which
        # the replay writes again in order.
        reporter.samples(2, items("again"))
        assert [(s["step"], s["completion"]) for s in ca.get(url).json()["data"]] == [
            (0, "base 0"), (0, "base 1"), (2, "again 0"), (2, "again 1")]
        with session_scope(db_url) as s:
            kinds = s.scalars(select(EventRow.data).where(EventRow.job_id == job_id, EventRow.kind == "samples")
                                .order_by(EventRow.seq)).all()
        assert [k["step"] for k in kinds] == [0, 2, 4, 2]  # each write is announced (the dashboard listens)

        # Another project's job does not exist.
        assert_envelope(cb.get(url), 404, param="fine_tuning_job_id")
