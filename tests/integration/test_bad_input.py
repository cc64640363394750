"""A corpus of malformed uploads and requests against a real server in key-required mode: each
gets a 4xx with the error envelope, nothing is stored (rows and files counted before and after),
and the service stays up. File names are metadata only: nothing reaches the filesystem by name."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from service.store.models import EventRow, FileRow, JobRow
from service.store.session import normalise_url
from tests.integration.helpers import GOOD_DATASET, assert_envelope, dpo_body, jsonl, preference_line, upload
from tests.integration.tenants import make_tenant, own_server

pytestmark = pytest.mark.integration

LIMIT = 20_000  # max_upload_bytes of this server
JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture(scope="module")
def world(start_api, make_database, tmp_path_factory):
    server = own_server(start_api, make_database, tmp_path_factory, max_upload_bytes=LIMIT,
                        max_examples_per_file=50, max_json_body_bytes=32_768, rate_limit_per_minute=0)
    me, other = make_tenant(server), make_tenant(server)
    with me.client(server) as c, other.client(server) as o:
        mine = upload(c).json()["id"]
        theirs = upload(o).json()["id"]
        their_job = o.post(JOBS, json=dpo_body(theirs)).json()["id"]
        c.post(JOBS, json=dpo_body(mine), headers={"Idempotency-Key": "k1"})
    engine = create_engine(normalise_url(server.settings["database_url"]))
    yield {"server": server, "me": me, "mine": mine, "theirs": theirs, "their_job": their_job, "engine": engine}
    engine.dispose()


def snapshot(world) -> tuple:
    with world["engine"].connect() as conn:
        rows = tuple(conn.scalar(select(func.count()).select_from(t)) for t in (FileRow, JobRow, EventRow))
        status = conn.scalar(select(JobRow.status).where(JobRow.id == world["their_job"]))
    stored = sorted(str(p) for p in Path(world["server"].settings["artifacts_dir"]).rglob("*"))
    return rows, status, stored


def up(data: bytes, filename: str = "d.jsonl", purpose: str = "fine-tune", ctype: str = "application/jsonl"):
    return lambda c, w: c.post("/v1/files", files={"file": (filename, data, ctype)}, data={"purpose": purpose})


def job(**change):
    return lambda c, w: c.post(JOBS, json={**dpo_body(w["mine"]), **change})


def hp(**values):
    return job(method={"type": "dpo", "dpo": {"hyperparameters": values}})


def raw_job(content: bytes, ctype: str = "application/json"):
    return lambda c, w: c.post(JOBS, content=content, headers={"content-type": ctype})


def get(path: str, **params):
    return lambda c, w: c.get(path.format(**w), params=params)


def as_(headers: dict, method: str = "GET", path: str = "/v1/files"):
    return lambda c, w: httpx.request(method, w["server"].url + path, headers=headers, timeout=30)


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../../evil.jsonl", GOOD_DATASET)
    return buf.getvalue()


line = preference_line()
CASES = {
    # Uploads.
    "broken_json_line": up(GOOD_DATASET + b'{"input": \n'),
    "line_is_an_array": up(b"[1, 2, 3]\n"),
    "line_is_a_string": up(b'"just text"\n'),
    "wrong_type_preferred_output": up(jsonl([{**line, "preferred_output": "a"}])),
    "missing_non_preferred_output": up(jsonl([{k: v for k, v in line.items() if k != "non_preferred_output"}])),
    "empty_content": up(jsonl([{**line, "preferred_output": [{"role": "assistant", "content": ""}]}])),
    "bad_role": up(jsonl([{**line, "input": {"messages": [{"role": "robot", "content": "x"}]}}])),
    "messages_not_a_list": up(jsonl([{**line, "input": {"messages": "hi"}}])),
    "unknown_format": up(jsonl([{"foo": "bar"}])),
    "empty_file": up(b""),
    "blank_lines_only": up(b"\n\n   \n"),
    "non_utf8": up(b'{"input": "\xff\xfe\xfa"}\n'),
    "utf16": up(GOOD_DATASET.decode().encode("utf-16")),
    "nul_bytes": up(b"\x00" * 100),
    "deeply_nested": up(b"[" * 5000 + b"]" * 5000 + b"\n"),
    "zip_archive_named_zip": up(_zip(), filename="a.zip", ctype="application/zip"),
    "traversal_name_bad_content": up(b"root:x:0:0\n", filename="../../etc/passwd"),
    "windows_traversal_name": up(b"\x89PNG\r\n", filename="..\\..\\windows\\win.ini"),
    "huge_single_line": up(b'{"prompt": "' + b"x" * (LIMIT * 2) + b'"}\n'),
    "too_many_examples": up(jsonl([line] * 51)),
    "wrong_purpose": up(GOOD_DATASET, purpose="assistants"),
    "missing_purpose": lambda c, w: c.post("/v1/files", files={"file": ("d.jsonl", GOOD_DATASET)}),
    "missing_file": lambda c, w: c.post("/v1/files", data={"purpose": "fine-tune"}),
    "file_as_text_field": lambda c, w: c.post("/v1/files", data={"purpose": "fine-tune", "file": "abc"}),
    "json_instead_of_multipart": lambda c, w: c.post("/v1/files", json={"file": "x", "purpose": "fine-tune"}),
    # Job bodies.
    "job_broken_json": raw_job(b'{"model": '),
    "job_body_is_array": raw_job(b"[]"),
    "job_body_is_string": raw_job(b'"model"'),
    "job_wrong_content_type": raw_job(json.dumps(dpo_body("file-x")).encode(), "text/plain"),
    "job_missing_model": lambda c, w: c.post(JOBS, json={"training_file": w["mine"]}),
    "job_model_is_int": job(model=7),
    "job_model_is_a_path": job(model="../../models/llama"),
    "job_other_tenants_file": job(training_file="{theirs}"),
    "job_unknown_field": job(learning_rate=3),
    "negative_beta": hp(beta=-1),
    "absurd_epochs": hp(n_epochs=10**9),
    "zero_batch": hp(batch_size=0),
    "negative_lr_multiplier": hp(learning_rate_multiplier=-1),
    "nan_beta": raw_job(json.dumps(dpo_body("F")).replace('"n_epochs": 1', '"beta": NaN, "n_epochs": 1').encode()),
    "hyperparameters_wrong_type": job(method={"type": "dpo", "dpo": {"hyperparameters": "fast"}}),
    "unknown_method": job(method={"type": "ppo"}),
    "seed_too_large": job(seed=2**40),
    "metadata_not_strings": job(metadata={"a": 1}),
    "suffix_too_long": job(suffix="x" * 65),
    "idempotency_key_reused": lambda c, w: c.post(JOBS, json=dpo_body(w["mine"], beta=0.5),
                                                  headers={"Idempotency-Key": "k1"}),
    "body_over_limit": raw_job(b'{"model": "' + b"m" * 40_000 + b'"}'),
    # Query strings and paths.
    "files_limit_negative": get("/v1/files", limit=-1),
    "jobs_limit_abc": get(JOBS, limit="abc"),
    "jobs_after_garbage": get(JOBS, after="ftjob-garbage"),
    "metadata_filter_malformed": get(JOBS, **{"metadata[]": "x"}),
    "metrics_min_step_negative": get(JOBS + "/{their_job}/metrics", min_step=-5),
    "files_order_invalid": get("/v1/files", order="sideways"),
    "stream_not_a_bool": get(JOBS + "/{their_job}/events", stream="maybe"),
    "wrong_verb": lambda c, w: c.put("/v1/files"),
    # Auth.
    "no_key": as_({}),
    "wrong_key": as_({"Authorization": "Bearer rlhf-not-a-key"}),
    "empty_bearer": as_({"Authorization": "Bearer"}),
    "basic_auth": as_({"Authorization": "Basic dXNlcjpwYXNz"}),
    "no_key_upload": as_({}, "POST", "/v1/files"),
    # Other tenants' ids.
    "other_file": get("/v1/files/{theirs}"),
    "other_file_content": get("/v1/files/{theirs}/content"),
    "other_file_delete": lambda c, w: c.delete(f"/v1/files/{w['theirs']}"),
    "other_job": get(JOBS + "/{their_job}"),
    "other_job_events_stream": get(JOBS + "/{their_job}/events", stream="true"),
    "other_job_cancel": lambda c, w: c.post(f"{JOBS}/{w['their_job']}/cancel"),
    "other_job_pause": lambda c, w: c.post(f"{JOBS}/{w['their_job']}/pause"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_and_nothing_is_stored(world, name):
    before = snapshot(world)
    with world["me"].client(world["server"]) as c:
        r = CASES[name](c, world)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:500])
        error = r.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"} and error["message"], (name, error)
        assert snapshot(world) == before, name
        assert c.get("/healthz").status_code == 200


def test_corpus_size():
    assert len(CASES) >= 40


def test_file_names_are_metadata_only(world, tmp_path):
    """Traversal and archive names with valid content: stored by generated id, name sanitised."""
    root = Path(world["server"].settings["artifacts_dir"])
    with world["me"].client(world["server"]) as c:
        for name, shown in (("../../etc/passwd", "passwd"), ("a.zip", "a.zip"), ("..", "upload.jsonl"),
                            ("C:\\Users\\x\\data.jsonl", "data.jsonl")):
            before = set(root.rglob("*"))
            f = upload(c, filename=name).json()
            assert f["filename"] == shown
            assert set(root.rglob("*")) - before == {root / "files" / f"{f['id']}.jsonl"}
            assert c.get(f"/v1/files/{f['id']}/content").content == GOOD_DATASET
    assert_envelope(httpx.get(world["server"].url + "/v1/files"), 401)
