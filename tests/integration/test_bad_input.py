"""A corpus of malformed uploads and requests against a real server in key-required mode: each
gets the 4xx, error code and param it is about, in the error envelope; nothing is stored (rows and
files counted before and after), and the service stays up. File names are metadata only: nothing
reaches the filesystem by name, and dashboard asset names never walk out of their folder."""

from __future__ import annotations

import io
import json
import socket
import time
import zipfile
from pathlib import Path

import httpcore
import httpx
import pytest
from sqlalchemy import create_engine, func, select

from service.shared.store.models import EventRow, FileRow, JobRow
from service.shared.store.session import normalise_url
from tests.integration.helpers import GOOD_DATASET, assert_envelope, dpo_body, jsonl, preference_line, upload
from tests.integration.tenants import make_tenant, own_server

pytestmark = pytest.mark.integration

LIMIT = 20_000  # max_upload_bytes of this server
EXAMPLES = 50  # max_examples_per_file of this server
JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture(scope="module")
def world(start_api, make_database, tmp_path_factory):
    server = own_server(start_api, make_database, tmp_path_factory, max_upload_bytes=LIMIT,
                        max_examples_per_file=EXAMPLES, max_json_body_bytes=32_768, rate_limit_per_minute=0)
    me, other = make_tenant(server), make_tenant(server)
    with me.client(server) as c, other.client(server) as o:
        mine = upload(c).json()["id"]
        theirs = upload(o).json()["id"]
        their_job = o.post(JOBS, json=dpo_body(theirs)).json()["id"]
        # The caller's own job (no worker here: it stays queued), under the key one case reuses.
        my_job = c.post(JOBS, json=dpo_body(mine), headers={"Idempotency-Key": "k1"}).json()["id"]
    engine = create_engine(normalise_url(server.settings["database_url"]))
    yield {"server": server, "me": me, "mine": mine, "theirs": theirs, "their_job": their_job,
           "my_job": my_job, "engine": engine}
    engine.dispose()


def snapshot(world) -> tuple:
    with world["engine"].connect() as conn:
        rows = tuple(conn.scalar(select(func.count()).select_from(t)) for t in (FileRow, JobRow, EventRow))
        status = dict(conn.execute(select(JobRow.id, JobRow.status).where(
            JobRow.id.in_([world["their_job"], world["my_job"]]))).all())
    stored = sorted(str(p) for p in Path(world["server"].settings["artifacts_dir"]).rglob("*"))
    return rows, status, stored


def up(data: bytes, filename: str = "d.jsonl", purpose: str = "fine-tune", ctype: str = "application/jsonl"):
    return lambda c, w: c.post("/v1/files", files={"file": (filename, data, ctype)}, data={"purpose": purpose})


def job(**change):
    return lambda c, w: c.post(JOBS, json={**dpo_body(w["mine"]), **change})


def hp(**values):
    return job(method={"type": "dpo", "dpo": {"hyperparameters": values}})


def raw_job(content, ctype: str = "application/json"):
    """`content`: bytes, or a function of the world for a body that names the caller's file."""
    return lambda c, w: c.post(JOBS, content=content(w) if callable(content) else content,
                               headers={"content-type": ctype})


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
# name -> (request, status, code, param). Code and param pin the reason for each refusal, so a case
# cannot pass because something other than what it names went wrong (a missing file, a 404...).
CASES = {
    # Uploads.
    "broken_json_line": (up(GOOD_DATASET + b'{"input": \n'), 400, "invalid_json", None),
    "line_is_an_array": (up(b"[1, 2, 3]\n"), 400, "not_an_object", None),
    "line_is_a_string": (up(b'"just text"\n'), 400, "not_an_object", None),
    "wrong_type_preferred_output": (up(jsonl([{**line, "preferred_output": "a"}])), 400, "wrong_type",
                                    "preferred_output"),
    "missing_non_preferred_output": (up(jsonl([{k: v for k, v in line.items() if k != "non_preferred_output"}])),
                                     400, "missing_field", "non_preferred_output"),
    "empty_content": (up(jsonl([{**line, "preferred_output": [{"role": "assistant", "content": ""}]}])),
                      400, "empty_content", "preferred_output[0].content"),
    "bad_role": (up(jsonl([{**line, "input": {"messages": [{"role": "robot", "content": "x"}]}}])),
                 400, "invalid_role", "input.messages[0].role"),
    "messages_not_a_list": (up(jsonl([{**line, "input": {"messages": "hi"}}])), 400, "wrong_type", "input.messages"),
    "unknown_format": (up(jsonl([{"foo": "bar"}])), 400, "missing_field", None),
    "empty_file": (up(b""), 400, "empty_file", None),
    "blank_lines_only": (up(b"\n\n   \n"), 400, "empty_file", None),
    "non_utf8": (up(b'{"input": "\xff\xfe\xfa"}\n'), 400, "invalid_encoding", None),
    "utf16": (up(GOOD_DATASET.decode().encode("utf-16")), 400, "invalid_encoding", None),
    "nul_bytes": (up(b"\x00" * 100), 400, "invalid_json", None),
    "deeply_nested": (up(b"[" * 5000 + b"]" * 5000 + b"\n"), 400, "invalid_json", None),
    "zip_archive_named_zip": (up(_zip(), filename="a.zip", ctype="application/zip"), 400, "invalid_encoding", None),
    "traversal_name_bad_content": (up(b"root:x:0:0\n", filename="../../etc/passwd"), 400, "invalid_json", None),
    "windows_traversal_name": (up(b"\x89PNG\r\n", filename="..\\..\\windows\\win.ini"), 400, "invalid_encoding", None),
    "huge_single_line": (up(b'{"prompt": "' + b"x" * (LIMIT * 2) + b'"}\n'), 413, "file_too_large", "file"),
    "too_many_examples": (up(jsonl([line] * (EXAMPLES + 1))), 400, "too_many_examples", None),
    "wrong_purpose": (up(GOOD_DATASET, purpose="assistants"), 400, "invalid_value", "purpose"),
    "missing_purpose": (lambda c, w: c.post("/v1/files", files={"file": ("d.jsonl", GOOD_DATASET)}),
                        400, "missing_required_parameter", "purpose"),
    "missing_file": (lambda c, w: c.post("/v1/files", data={"purpose": "fine-tune"}),
                     400, "missing_required_parameter", "file"),
    "file_as_text_field": (lambda c, w: c.post("/v1/files", data={"purpose": "fine-tune", "file": "abc"}),
                           400, "invalid_value", "file"),
    "json_instead_of_multipart": (lambda c, w: c.post("/v1/files", json={"file": "x", "purpose": "fine-tune"}),
                                  400, "missing_required_parameter", "file"),
    # Job bodies. Each names the caller's own file, so only the thing the case is about is wrong.
    "job_broken_json": (raw_job(b'{"model": '), 400, "invalid_json", None),
    "job_body_is_array": (raw_job(b"[]"), 400, "invalid_value", None),
    "job_body_is_string": (raw_job(b'"model"'), 400, "invalid_value", None),
    "job_wrong_content_type": (raw_job(lambda w: json.dumps(dpo_body(w["mine"])).encode(), "text/plain"),
                               400, "invalid_value", None),
    "job_missing_model": (lambda c, w: c.post(JOBS, json={"training_file": w["mine"]}),
                          400, "missing_required_parameter", "model"),
    "job_model_is_int": (job(model=7), 400, "invalid_value", "model"),
    "job_model_is_a_path": (job(model="../../models/llama"), 400, "model_not_available", "model"),
    "job_other_tenants_file": (lambda c, w: c.post(JOBS, json=dpo_body(w["theirs"])), 400, "invalid_file",
                               "training_file"),
    "job_unknown_field": (job(learning_rate=3), 400, "unknown_parameter", "learning_rate"),
    "negative_beta": (hp(beta=-1), 400, "invalid_value", "method.dpo.hyperparameters.beta"),
    "absurd_epochs": (hp(n_epochs=10**9), 400, "invalid_value", "method.dpo.hyperparameters.n_epochs"),
    "zero_batch": (hp(batch_size=0), 400, "invalid_value", "method.dpo.hyperparameters.batch_size"),
    "negative_lr_multiplier": (hp(learning_rate_multiplier=-1), 400, "invalid_value",
                               "method.dpo.hyperparameters.learning_rate_multiplier"),
    # json.dumps writes a float NaN as the bare token NaN, which Python's parser (FastAPI's) accepts.
    "nan_beta": (raw_job(lambda w: json.dumps(dpo_body(w["mine"], beta=float("nan"))).encode()),
                 400, "invalid_value", "method.dpo.hyperparameters.beta"),
    "hyperparameters_wrong_type": (job(method={"type": "dpo", "dpo": {"hyperparameters": "fast"}}),
                                   400, "invalid_value", "method.dpo.hyperparameters"),
    "unknown_method": (job(method={"type": "ppo"}), 400, "invalid_value", "method.type"),
    "seed_too_large": (job(seed=2**40), 400, "invalid_value", "seed"),
    "metadata_not_strings": (job(metadata={"a": 1}), 400, "invalid_value", "metadata.a"),
    "suffix_too_long": (job(suffix="x" * 65), 400, "invalid_value", "suffix"),
    "idempotency_key_reused": (lambda c, w: c.post(JOBS, json=dpo_body(w["mine"], beta=0.5),
                                                   headers={"Idempotency-Key": "k1"}),
                               409, "idempotency_key_reused", "Idempotency-Key"),
    "body_over_limit": (raw_job(b'{"model": "' + b"m" * 40_000 + b'"}'), 413, "body_too_large", None),
    # Query strings and paths. Parameter checks use the caller's own job: another project's would
    # make a 404 an equally good answer.
    "files_limit_negative": (get("/v1/files", limit=-1), 400, "invalid_value", "limit"),
    "jobs_limit_abc": (get(JOBS, limit="abc"), 400, "invalid_value", "limit"),
    "jobs_after_garbage": (get(JOBS, after="ftjob-garbage"), 400, "invalid_value", "after"),
    "metadata_filter_malformed": (get(JOBS, **{"metadata[]": "x"}), 400, "invalid_value", "metadata[]"),
    "metrics_min_step_negative": (get(JOBS + "/{my_job}/metrics", min_step=-5), 400, "invalid_value", "min_step"),
    "files_order_invalid": (get("/v1/files", order="sideways"), 400, "invalid_value", "order"),
    "stream_not_a_bool": (get(JOBS + "/{my_job}/events", stream="maybe"), 400, "invalid_value", "stream"),
    "wrong_verb": (lambda c, w: c.put("/v1/files"), 405, "method_not_allowed", None),
    # Dashboard assets come from a fixed list; an encoded `/` or `\` never walks out of static/.
    "dashboard_encoded_traversal": (get("/dashboard/static/..%2F..%2Fservice%2Fsettings.py"),
                                    404, "unknown_url", None),
    "dashboard_backslash_traversal": (get("/dashboard/static/..%5C..%5Cservice%5Csettings.py"),
                                      404, "not_found", "name"),
    # Auth.
    "no_key": (as_({}), 401, "missing_api_key", None),
    "wrong_key": (as_({"Authorization": "Bearer rlhf-not-a-key"}), 401, "invalid_api_key", None),
    "empty_bearer": (as_({"Authorization": "Bearer"}), 401, "invalid_api_key", None),
    "basic_auth": (as_({"Authorization": "Basic dXNlcjpwYXNz"}), 401, "invalid_api_key", None),
    "no_key_upload": (as_({}, "POST", "/v1/files"), 401, "missing_api_key", None),
    # Other tenants' ids.
    "other_file": (get("/v1/files/{theirs}"), 404, "not_found", "file_id"),
    "other_file_content": (get("/v1/files/{theirs}/content"), 404, "not_found", "file_id"),
    "other_file_delete": (lambda c, w: c.delete(f"/v1/files/{w['theirs']}"), 404, "not_found", "file_id"),
    "other_job": (get(JOBS + "/{their_job}"), 404, "not_found", "fine_tuning_job_id"),
    "other_job_events_stream": (get(JOBS + "/{their_job}/events", stream="true"), 404, "not_found",
                                "fine_tuning_job_id"),
    "other_job_cancel": (lambda c, w: c.post(f"{JOBS}/{w['their_job']}/cancel"), 404, "not_found",
                         "fine_tuning_job_id"),
    "other_job_pause": (lambda c, w: c.post(f"{JOBS}/{w['their_job']}/pause"), 404, "not_found",
                        "fine_tuning_job_id"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_and_nothing_is_stored(world, name):
    request, status, code, param = CASES[name]
    before = snapshot(world)
    with world["me"].client(world["server"]) as c:
        error = assert_envelope(request(c, world), status, code=code)
        assert error["param"] == param, (name, error)  # None too: no field is blamed by mistake
        assert snapshot(world) == before, name
        assert c.get("/healthz").status_code == 200


def test_corpus_size():
    assert len(CASES) >= 40


def test_exactly_the_example_limit_is_accepted(world):
    # too_many_examples refuses one more: the limit sits exactly where the setting says.
    with world["me"].client(world["server"]) as c:
        r = upload(c, jsonl([line] * EXAMPLES))
    assert r.status_code == 200, r.text
    assert r.json()["num_examples"] == EXAMPLES


def raw_get(server, target: bytes) -> httpx.Response:
    """GET with the request target sent byte for byte: httpx resolves `../` before sending."""
    url = httpx.URL(server.url)
    with httpcore.ConnectionPool() as pool:
        r = pool.request("GET", httpcore.URL(scheme=b"http", host=url.host.encode(), port=url.port, target=target))
    return httpx.Response(r.status, headers=r.headers, content=r.content)


def test_dashboard_traversal_never_serves_a_file(world):
    server = world["server"]
    assert raw_get(server, b"/dashboard/static/app.js").status_code == 200  # the helper reaches assets
    for target, code in ((b"/dashboard/static/../../../shared/settings.py", "unknown_url"),
                         (b"/dashboard/static/../../../../etc/passwd", "unknown_url"),
                         (b"/dashboard/static/..", "not_found"),
                         (b"/dashboard/static/%2e%2e/%2e%2e/%2e%2e/shared/settings.py", "unknown_url")):
        error = assert_envelope(raw_get(server, target), 404, code=code)  # JSON envelope, not the file
        assert ".." in error["message"], error  # the server saw the dots: nothing resolved them on the way


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


def test_a_chunked_upload_without_content_length_is_cut_off_while_it_arrives(world):
    """No Content-Length to refuse up front: the 413 must come once the bytes pass the limit,
    not after the whole body was taken in (which could be any size)."""
    before = snapshot(world)
    url = httpx.URL(world["server"].url)
    head = (f"POST /v1/files HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {world['me'].key}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    part = (b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.jsonl"\r\n\r\n')
    line = json.dumps(preference_line()).encode() + b"\n"
    chunk = line * (16384 // len(line))
    sent, early, answer = 0, False, b""
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
        while sent < 200 * LIMIT:  # 4 MB at most, 200 times the limit, and never the last chunk
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server answered and closed
                early = True
                break
            sent += len(chunk)
            if _answered(sock):
                early = True
                break
            time.sleep(0.002)
        try:
            while not (b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}")) and (data := sock.recv(65536)):
                answer += data
        except TimeoutError:
            pass
    assert early, f"no answer while the body was still arriving ({sent} bytes sent)"
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "file_too_large"
    assert snapshot(world) == before


def _answered(sock: socket.socket) -> bool:
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.settimeout(timeout)
