"""`/v1/files` against a real API server and Postgres: validation at upload, nothing stored on
error, listing, download and delete."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from service.shared.store.models import FileRow, JobRow
from tests.integration.helpers import GOOD_DATASET, assert_envelope, dpo_body, jsonl, preference_line, upload

pytestmark = pytest.mark.integration


@pytest.fixture
def client(idle_api):
    # No worker consumes this server's queue: jobs stay queued while we look at them.
    with httpx.Client(base_url=idle_api.url, timeout=30) as c:
        yield c


def stored_files(server) -> set[str]:
    folder = Path(server.settings["artifacts_dir"]) / "files"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def count_rows(db) -> int:
    db.rollback()  # see the latest committed state
    return db.scalar(select(func.count()).select_from(FileRow))


def test_good_upload_is_stored_and_described(client, idle_db, idle_api):
    r = upload(client, filename="../../etc/prefs.jsonl")
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["id"].startswith("file-") and f["object"] == "file"
    assert (f["bytes"], f["purpose"], f["status"]) == (len(GOOD_DATASET), "fine-tune", "processed")
    assert f["filename"] == "prefs.jsonl"  # directory parts dropped
    assert (f["format"], f["num_examples"]) == ("preference", 4)
    assert isinstance(f["created_at"], int)

    row = idle_db.scalar(select(FileRow).where(FileRow.id == f["id"]))
    assert row.sha256 == hashlib.sha256(GOOD_DATASET).hexdigest()
    assert f"{f['id']}.jsonl" in stored_files(idle_api)
    assert client.get(f"/v1/files/{f['id']}").json() == f
    assert client.get(f"/v1/files/{f['id']}/content").content == GOOD_DATASET


@pytest.mark.parametrize("bad_line, field, code", [
    ({**preference_line(), "preferred_output": [{"role": "assistant", "content": ""}]},
     "preferred_output[0].content", None),
    ({"input": {"messages": [{"role": "user", "content": "hi"}]},
      "preferred_output": [{"role": "assistant", "content": "a"}]},
     None, None),
])
def test_bad_line_is_named_and_nothing_is_stored(client, idle_db, idle_api, bad_line, field, code):
    rows_before, files_before = count_rows(idle_db), stored_files(idle_api)
    data = jsonl([preference_line(), preference_line("x", "y", "z"), bad_line, preference_line()])
    error = assert_envelope(upload(client, data), 400)
    assert "line 3" in error["message"], error
    assert error["code"]
    if field is not None:
        assert error["param"] == field and f"field {field}" in error["message"]
    first = error["issues"][0]
    assert first["line"] == 3 and first["code"] == error["code"] and first["field"] == error["param"]
    assert count_rows(idle_db) == rows_before
    assert stored_files(idle_api) == files_before


def test_broken_json_and_empty_file(client, idle_db):
    rows_before = count_rows(idle_db)
    error = assert_envelope(upload(client, GOOD_DATASET + b"{not json\n"), 400)
    assert "line 5" in error["message"]
    assert_envelope(upload(client, b""), 400)
    assert count_rows(idle_db) == rows_before


def test_upload_request_errors(client):
    assert_envelope(upload(client, purpose="assistants"), 400, param="purpose")
    assert_envelope(client.post("/v1/files", data={"purpose": "fine-tune"}), 400, param="file",
                    code="missing_required_parameter")


def test_upload_over_the_size_limit_is_413(start_api, idle_api, idle_db):
    small = start_api(**idle_api.settings, max_upload_bytes=200)
    rows_before, files_before = count_rows(idle_db), stored_files(idle_api)
    with httpx.Client(base_url=small.url) as c:
        assert_envelope(upload(c, GOOD_DATASET), 413, code="file_too_large")
    assert count_rows(idle_db) == rows_before and stored_files(idle_api) == files_before


def test_list_paginates_newest_first(client):
    ids = [upload(client).json()["id"] for _ in range(3)]
    page = client.get("/v1/files", params={"limit": 2}).json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [f["id"] for f in page["data"]] == ids[::-1][:2]
    assert page["last_id"] == ids[1]
    rest = client.get("/v1/files", params={"limit": 1, "after": page["last_id"]}).json()
    assert [f["id"] for f in rest["data"]] == [ids[0]]
    assert client.get("/v1/files", params={"purpose": "batch"}).json()["data"] == []
    assert_envelope(client.get("/v1/files", params={"after": "file-nope"}), 400, param="after")
    assert_envelope(client.get("/v1/files", params={"limit": 0}), 400, param="limit")


def test_delete(client, idle_api):
    file_id = upload(client).json()["id"]
    r = client.delete(f"/v1/files/{file_id}")
    assert r.json() == {"id": file_id, "object": "file", "deleted": True}
    assert f"{file_id}.jsonl" not in stored_files(idle_api)
    assert_envelope(client.get(f"/v1/files/{file_id}"), 404, code="not_found")
    assert_envelope(client.delete(f"/v1/files/{file_id}"), 404)


def test_delete_refused_while_a_job_uses_the_file(client):
    file_id = upload(client).json()["id"]
    job = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()
    assert_envelope(client.delete(f"/v1/files/{file_id}"), 409, code="file_in_use")
    client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert client.delete(f"/v1/files/{file_id}").json()["deleted"] is True


def test_delete_refused_while_a_job_runs_on_the_file(client, idle_db, idle_api):
    file_id = upload(client).json()["id"]
    job_id = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()["id"]
    idle_db.rollback()
    idle_db.scalar(select(JobRow).where(JobRow.id == job_id)).status = "running"  # as a worker would
    idle_db.commit()
    try:
        assert_envelope(client.delete(f"/v1/files/{file_id}"), 409, param="file_id", code="file_in_use")
        assert client.get(f"/v1/files/{file_id}/content").content == GOOD_DATASET  # row and bytes kept
        assert f"{file_id}.jsonl" in stored_files(idle_api)
    finally:  # a running job left in the shared idle_api would count against every later test
        cancelled = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert client.delete(f"/v1/files/{file_id}").json()["deleted"] is True  # finished: it may go
    assert f"{file_id}.jsonl" not in stored_files(idle_api)


def test_unknown_file_ids_are_404(client):
    for path in ("/v1/files/file-missing", "/v1/files/file-missing/content"):
        assert_envelope(client.get(path), 404, code="not_found")
