"""Projects and API keys against real API servers and Postgres: open mode until the first key,
keys required after it, revocation, tenant isolation (404, never 403 or data), rate limits, and
the trust boundaries between projects and between the API and a worker: an Idempotency-Key is a
project's own, a reward-model job of another project is never used, a cancel that races the
last step wins. Every test works in any order (the one that needs a key-less server has its own)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from service import admin
from service.shared.artifacts import ArtifactStore
from service.shared.store.models import CheckpointRow, JobRow, ProjectRow, new_id
from service.shared.store.session import normalise_url, session_scope
from tests import infra
from tests.integration.helpers import assert_envelope, dpo_body, upload
from tests.integration.tenants import make_tenant, own_server

pytestmark = pytest.mark.integration


def admin_cli(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.admin", *args], cwd=infra.REPO, text=True,
                          capture_output=True, timeout=60,
                          env=infra.service_env(database_url=server.settings["database_url"]))


def add_checkpoint(server, job_id: str) -> str:
    """A checkpoint as the worker records it: its adapter under the artifacts dir, then its row."""
    store = ArtifactStore(server.settings["artifacts_dir"])
    key = store.checkpoint_key(job_id, 1)
    (store.path(key) / "adapter").mkdir(parents=True)
    (store.path(key) / "adapter" / "adapter_config.json").write_text("{}")
    ckpt_id = new_id("ftckpt")
    with session_scope(server.settings["database_url"]) as s:
        s.add(CheckpointRow(id=ckpt_id, job_id=job_id, step_number=1, metrics={}, storage_key=key))
    return ckpt_id


@pytest.fixture(scope="module")
def server(start_api, make_database, tmp_path_factory):
    return own_server(start_api, make_database, tmp_path_factory)


@pytest.fixture(scope="module")
def strict_server(start_api, make_database, tmp_path_factory):
    return own_server(start_api, make_database, tmp_path_factory, auth_required="true",
                      rate_limit_per_minute=6, rate_limit_burst=3)


def test_first_key_switches_from_open_to_required(start_api, make_database, tmp_path_factory):
    server = own_server(start_api, make_database, tmp_path_factory)  # its own: no key exists yet
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        # No keys yet: open, as project "default", whatever Authorization header comes along.
        assert anon.get("/v1/files").status_code == 200
        assert anon.get("/v1/files", headers={"Authorization": "Bearer anything"}).status_code == 200
        open_file = upload(anon).json()["id"]

        made = admin_cli(server, "create-project", "acme")
        assert made.returncode == 0 and "created project acme" in made.stdout, made.stderr
        with session_scope(server.settings["database_url"]) as s:
            assert s.scalar(select(ProjectRow.name).where(ProjectRow.name == "acme")) == "acme"
        again = admin_cli(server, "create-project", "acme")
        assert again.returncode == 1 and "already exists" in again.stderr
        done = admin_cli(server, "create-key", "--project", "acme", "--name", "ci")
        assert done.returncode == 0, done.stderr
        secret = done.stdout.split("shown once, store it now): ")[1].strip()
        key_id = done.stdout.split("key id: ")[1].split()[0]
        assert secret.startswith("rlhf-") and len(secret) > 40

        assert_envelope(anon.get("/v1/files"), 401, code="missing_api_key")
        assert_envelope(anon.get("/v1/files", headers={"Authorization": "Bearer rlhf-wrong"}), 401,
                        code="invalid_api_key")
        assert_envelope(anon.get("/v1/files", headers={"Authorization": f"Basic {secret}"}), 401)
        good = {"Authorization": f"Bearer {secret}"}
        assert anon.get("/v1/files", headers=good).json()["data"] == []  # acme sees nothing of "default"
        assert_envelope(anon.get(f"/v1/files/{open_file}", headers=good), 404, code="not_found")
        assert anon.get("/healthz").status_code == 200  # operations endpoints need no key

        listing = admin_cli(server, "list-keys")
        assert key_id in listing.stdout and "acme" in listing.stdout and secret not in listing.stdout
        engine = create_engine(normalise_url(server.settings["database_url"]))
        with engine.connect() as conn:  # only the hash is stored
            dump = str(conn.execute(text("SELECT * FROM api_keys")).all())
        engine.dispose()
        assert secret not in dump and secret[12:] not in dump

        assert admin_cli(server, "revoke-key", key_id).returncode == 0
        assert_envelope(anon.get("/v1/files", headers=good), 401, code="invalid_api_key")
        with pytest.raises(admin.AdminError):
            admin.revoke_key(server.settings["database_url"], "key-nope")
        with pytest.raises(admin.AdminError):
            admin.create_key(server.settings["database_url"], "nope")


def test_auth_required_setting_refuses_without_keys(strict_server):
    with httpx.Client(base_url=strict_server.url, timeout=30) as anon:  # no key exists yet here
        assert_envelope(anon.get("/v1/fine_tuning/jobs"), 401, code="missing_api_key")


def test_a_request_without_a_valid_key_learns_nothing_about_its_body(server):
    """FastAPI parses a JSON body before it runs the auth dependency; a body it cannot parse must
    still get the 401, not a description of what is wrong with it."""
    tenant = make_tenant(server)
    broken = {"content": b'{"model": ', "headers": {"content-type": "application/json"}}
    wrong_key = {"content": broken["content"], "headers": {**broken["headers"], "authorization": "Bearer rlhf-wrong"}}
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        assert_envelope(anon.post("/v1/fine_tuning/jobs", **broken), 401, code="missing_api_key")
        assert_envelope(anon.post("/v1/fine_tuning/jobs", **wrong_key), 401, code="invalid_api_key")
        assert_envelope(anon.post("/v1/files", data={"purpose": "fine-tune"}), 401, code="missing_api_key")
    with tenant.client(server) as client:  # with a key, the same requests are described
        assert_envelope(client.post("/v1/fine_tuning/jobs", **broken), 400, code="invalid_json")
        assert_envelope(client.post("/v1/files", data={"purpose": "fine-tune"}), 400, param="file")


def test_another_projects_ids_are_404(server):
    a, b = make_tenant(server), make_tenant(server)
    with a.client(server) as ca, b.client(server) as cb:
        file_id = upload(ca).json()["id"]
        job_id = ca.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()["id"]
        job = f"/v1/fine_tuning/jobs/{job_id}"
        ckpt_id = add_checkpoint(server, job_id)
        # The owner gets the archive: B's 404s below are about ownership, not missing files.
        assert ca.get(f"{job}/checkpoints/{ckpt_id}/adapter").status_code == 200
        for method, path in [("GET", f"/v1/files/{file_id}"), ("GET", f"/v1/files/{file_id}/content"),
                             ("DELETE", f"/v1/files/{file_id}"), ("GET", job), ("GET", f"{job}/events"),
                             ("GET", f"{job}/events?stream=true"), ("GET", f"{job}/checkpoints"),
                             ("GET", f"{job}/metrics"), ("GET", f"{job}/adapter"),
                             ("GET", f"{job}/checkpoints/ftckpt-x/adapter"),
                             ("GET", f"{job}/checkpoints/{ckpt_id}/adapter"), ("GET", f"{job}/merged_model"),
                             ("POST", f"{job}/cancel"), ("POST", f"{job}/pause"), ("POST", f"{job}/resume")]:
            assert_envelope(cb.request(method, path), 404, code="not_found")
        assert cb.get("/v1/files").json()["data"] == [] and cb.get("/v1/fine_tuning/jobs").json()["data"] == []
        # Naming another project's file in a job body is an unknown file.
        assert_envelope(cb.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)), 400,
                        param="training_file", code="invalid_file")
        # The owner still has everything, untouched.
        assert ca.get(job).json()["status"] == "queued"
        assert [f["id"] for f in ca.get("/v1/files").json()["data"]] == [file_id]
        assert [j["id"] for j in ca.get("/v1/fine_tuning/jobs").json()["data"]] == [job_id]

        # B's own job in the path does not open A's checkpoint: the checkpoint must belong to it.
        b_job = cb.post("/v1/fine_tuning/jobs", json=dpo_body(upload(cb).json()["id"])).json()["id"]
        assert_envelope(cb.get(f"/v1/fine_tuning/jobs/{b_job}/checkpoints/{ckpt_id}/adapter"), 404,
                        param="checkpoint_id", code="not_found")


def test_rate_limit_is_per_key_with_retry_after(strict_server):
    a, b = make_tenant(strict_server), make_tenant(strict_server)
    with a.client(strict_server) as ca, b.client(strict_server) as cb:
        assert [ca.get("/v1/files").status_code for _ in range(3)] == [200] * 3
        r = ca.get("/v1/files")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(r.headers["retry-after"]) <= 10
        assert cb.get("/v1/files").status_code == 200  # another key has its own bucket


def test_redis_rate_limit_counts_in_redis(start_api, make_database, tmp_path_factory, redis_url):
    """The shared window every replica reads: the key's moving window lives in Redis."""
    import redis

    server = own_server(start_api, make_database, tmp_path_factory, rate_limit_per_minute=3,
                        rate_limit_backend="redis")
    tenant = make_tenant(server)
    with tenant.client(server) as c:
        codes = [c.get("/v1/files").status_code for _ in range(5)]
    assert codes == [200] * 3 + [429] * 2, codes  # a moving window: no minute boundary resets it
    counters = redis.Redis.from_url(redis_url).keys(f"rlhf:ratelimit:*/{tenant.key_id}/*")
    assert counters, "the count must live in Redis, where other replicas see it"


def test_one_idempotency_key_in_two_projects_makes_two_jobs(server):
    a, b = make_tenant(server), make_tenant(server)
    with a.client(server) as ca, b.client(server) as cb:
        key = {"Idempotency-Key": "shared-retry-key"}
        job_a = ca.post("/v1/fine_tuning/jobs", json=dpo_body(upload(ca).json()["id"]), headers=key)
        body_b = dpo_body(upload(cb).json()["id"])
        job_b = cb.post("/v1/fine_tuning/jobs", json=body_b, headers=key)
        assert job_a.status_code == job_b.status_code == 200, (job_a.text, job_b.text)
        assert job_a.json()["id"] != job_b.json()["id"]  # never the other project's job, nor a 409
        assert cb.post("/v1/fine_tuning/jobs", json=body_b, headers=key).json()["id"] == job_b.json()["id"]
        assert len(ca.get("/v1/fine_tuning/jobs").json()["data"]) == 1


def test_a_reward_naming_another_projects_reward_model_job_is_refused(server):
    from rlhf_engine.run import JobInputError
    from worker.training import reward_job_dir  # what the worker resolves `reward: {type: job}` with

    a, b = make_tenant(server), make_tenant(server)
    with a.client(server) as ca:
        rm_job = ca.post("/v1/fine_tuning/jobs", json={"model": "tiny-random-llama",
                                                       "training_file": upload(ca).json()["id"],
                                                       "method": {"type": "reward_model"}}).json()["id"]
    db_url = server.settings["database_url"]
    with session_scope(db_url) as s:
        row = s.scalar(select(JobRow).where(JobRow.id == rm_job))
        row.status, owner = "succeeded", row.project_id
    with b.client(server) as cb:  # the other project's id, as the worker gets it from that project's job
        other = cb.post("/v1/fine_tuning/jobs", json=dpo_body(upload(cb).json()["id"])).json()["id"]
    with session_scope(db_url) as s:
        stranger = s.scalar(select(JobRow.project_id).where(JobRow.id == other))
    assert stranger != owner
    store = ArtifactStore(server.settings["artifacts_dir"])
    assert reward_job_dir(db_url, store, owner, rm_job) == store.path(store.job_key(rm_job))  # its owner may
    with pytest.raises(JobInputError, match="not a reward_model job of this project"):
        reward_job_dir(db_url, store, stranger, rm_job)


def test_a_cancel_racing_the_last_step_wins(server):
    from worker import lease
    from worker.tasks import _finish  # the worker's final write after the last step

    tenant = make_tenant(server)
    db_url = server.settings["database_url"]
    done = ("The job has successfully completed", "info", None)
    with tenant.client(server) as c:
        file_id = upload(c).json()["id"]
        raced, after = (c.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()["id"] for _ in range(2))
        for job_id in (raced, after):
            assert lease.acquire(db_url, job_id, "worker-1", 60) == lease.ACQUIRED  # now running
        # The cancel lands after the last step, before the worker's final write: the cancel stands.
        assert c.post(f"/v1/fine_tuning/jobs/{raced}/cancel").json()["status"] == "cancelled"
        assert _finish(db_url, raced, "worker-1", done, status="succeeded") is False
        assert c.get(f"/v1/fine_tuning/jobs/{raced}").json()["status"] == "cancelled"
        messages = [e["message"]
                    for e in c.get(f"/v1/fine_tuning/jobs/{raced}/events", params={"limit": 100}).json()["data"]]
        assert messages.count("Job cancelled") == 1 and done[0] not in messages
        # The other order: the final write first, then the cancel is refused.
        assert _finish(db_url, after, "worker-1", done, status="succeeded") is True
        assert_envelope(c.post(f"/v1/fine_tuning/jobs/{after}/cancel"), 409, code="job_not_cancellable")
        assert c.get(f"/v1/fine_tuning/jobs/{after}").json()["status"] == "succeeded"
