"""`/v1/fine_tuning/jobs` against a real API server, Postgres and Redis (no worker here: jobs
stay queued, which is exactly what these tests need)."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import func, select

from service.shared.store.models import CheckpointRow, JobRow, MetricRow, new_id
from tests.integration.helpers import MODEL, assert_envelope, dpo_body, jsonl, upload

pytestmark = pytest.mark.integration


def job_count(db) -> int:
    db.rollback()
    return db.scalar(select(func.count()).select_from(JobRow))


def test_create_returns_a_queued_job(client, file_id):
    body = {**dpo_body(file_id, beta=0.2), "seed": 7, "suffix": "my-run_1", "metadata": {"team": "a"}}
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["id"].startswith("ftjob-") and job["object"] == "fine_tuning.job"
    assert (job["status"], job["model"], job["training_file"], job["seed"]) == ("queued", MODEL, file_id, 7)
    assert (job["suffix"], job["metadata"], job["error"], job["finished_at"]) == ("my-run_1", {"team": "a"}, None, None)
    assert job["fine_tuned_model"] is None and job["trained_tokens"] is None
    hp = job["method"]["dpo"]["hyperparameters"]
    assert job["method"]["type"] == "dpo" and (hp["beta"], hp["n_epochs"], hp["batch_size"]) == (0.2, 1, 2)
    assert hp["lora"]["r"] == 8  # defaults are filled in
    assert job["hyperparameters"] == {"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 1.0}
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}").json() == job

    events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()
    messages = [e["message"] for e in events["data"]]
    assert messages[:2] == ["Files validated, moving job to queued state", f"Validating training file: {file_id}"]
    assert all(e["object"] == "fine_tuning.job.event" and e["level"] == "info" for e in events["data"])


def test_job_was_sent_to_the_queue(client, file_id, redis_url, idle_api):
    import redis

    job = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()
    messages = redis.Redis.from_url(redis_url).lrange(idle_api.settings["queue"], 0, -1)
    assert any(job["id"].encode() in m and b"worker.run_job" in m for m in messages)


def test_deprecated_top_level_hyperparameters(client, file_id):
    body = {"model": MODEL, "training_file": file_id, "hyperparameters": {"n_epochs": 2}}
    job = client.post("/v1/fine_tuning/jobs", json=body).json()
    assert job["method"]["type"] == "supervised" and job["hyperparameters"]["n_epochs"] == 2
    both = {**dpo_body(file_id), "hyperparameters": {"n_epochs": 2}}
    assert_envelope(client.post("/v1/fine_tuning/jobs", json=both), 400, param="hyperparameters")


@pytest.mark.parametrize("change, param, code", [
    ({"model": "gpt-17"}, "model", "model_not_available"),
    # Only the operator's registry turns a name into weights: never the Hub, never a path.
    ({"model": "hf-internal-testing/tiny-random-gpt2"}, "model", "model_not_available"),
    ({"model": "/tmp"}, "model", "model_not_available"),
    ({"model": "../../etc"}, "model", "model_not_available"),
    ({"training_file": "file-doesnotexist"}, "training_file", "invalid_file"),
    ({"validation_file": "file-doesnotexist"}, "validation_file", "invalid_file"),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 1000}}}},
     "method.dpo.hyperparameters.beta", "invalid_value"),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": "lots"}}}},
     "method.dpo.hyperparameters.n_epochs", "invalid_value"),
    ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"betta": 0.1}}}},
     "method.dpo.hyperparameters.betta", "unknown_parameter"),
    ({"method": {"type": "ppo"}}, "method.type", "invalid_value"),
    ({"learning_rate": 1.0}, "learning_rate", "unknown_parameter"),
    ({"suffix": "no spaces allowed"}, "suffix", "invalid_value"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "invalid_value"),
    ({"seed": -1}, "seed", "invalid_value"),
])
def test_invalid_request_is_400_and_creates_no_job(client, idle_db, file_id, change, param, code):
    before = job_count(idle_db)
    error = assert_envelope(client.post("/v1/fine_tuning/jobs", json={**dpo_body(file_id), **change}),
                            400, param=param, code=code)
    assert param.split(".")[-1] in error["message"]
    assert job_count(idle_db) == before


def test_operator_registry_names_are_the_only_way_to_a_directory(start_api, idle_api, tmp_path):
    weights = tmp_path / "team-tiny"  # the API never reads it: the worker loads what the name maps to
    weights.mkdir()
    registry = tmp_path / "models.json"
    registry.write_text(json.dumps({"models": {"team-tiny": {"path": str(weights)}}}))
    server = start_api(**idle_api.settings, model_registry=str(registry))
    with httpx.Client(base_url=server.url, timeout=30) as c:
        file_id = upload(c).json()["id"]
        job = c.post("/v1/fine_tuning/jobs", json={**dpo_body(file_id), "model": "team-tiny"})
        assert job.status_code == 200, job.text
        assert job.json()["model"] == "team-tiny"
        assert_envelope(c.post("/v1/fine_tuning/jobs", json={**dpo_body(file_id), "model": str(weights)}),
                        400, param="model", code="model_not_available")


def test_unknown_model_message_lists_available_models(client, file_id):
    error = assert_envelope(client.post("/v1/fine_tuning/jobs", json={**dpo_body(file_id), "model": "x"}), 400)
    assert MODEL in error["message"]


def test_missing_field_and_broken_json(client, idle_db, file_id):
    before = job_count(idle_db)
    assert_envelope(client.post("/v1/fine_tuning/jobs", json={"training_file": file_id}), 400,
                    param="model", code="missing_required_parameter")
    assert_envelope(client.post("/v1/fine_tuning/jobs", content=b"{oops",
                                headers={"content-type": "application/json"}), 400, code="invalid_json")
    assert job_count(idle_db) == before


def test_list_paginates_newest_first_and_filters_metadata(client, file_id):
    tag = new_id("tag")
    ids = [client.post("/v1/fine_tuning/jobs", json={**dpo_body(file_id), "metadata": {"batch": tag}}).json()["id"]
           for _ in range(3)]
    first = client.get("/v1/fine_tuning/jobs", params={"limit": 2}).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [j["id"] for j in first["data"]] == ids[::-1][:2]
    second = client.get("/v1/fine_tuning/jobs", params={"limit": 2, "after": ids[1]}).json()
    assert second["data"][0]["id"] == ids[0]
    tagged = client.get("/v1/fine_tuning/jobs", params={"metadata[batch]": tag, "limit": 100}).json()
    assert [j["id"] for j in tagged["data"]] == ids[::-1] and tagged["has_more"] is False
    assert_envelope(client.get("/v1/fine_tuning/jobs", params={"limit": 101}), 400, param="limit")


def test_events_paginate_newest_first(client, file_id):
    job_id = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()["id"]
    all_events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]
    page = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1}).json()
    assert page["has_more"] is True and page["data"] == all_events[:1]
    rest = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"after": page["data"][0]["id"]}).json()
    assert rest["data"] == all_events[1:] and rest["has_more"] is False


def test_cancel_a_queued_job(client, file_id):
    job_id = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()["id"]
    job = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel").json()
    assert job["status"] == "cancelled" and isinstance(job["finished_at"], int)
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "cancelled"
    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]
    assert events[0]["message"] == "Job cancelled"
    assert_envelope(client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel"), 409, code="job_not_cancellable")


def test_adapter_before_success_is_409(client, file_id):
    job_id = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()["id"]
    assert_envelope(client.get(f"/v1/fine_tuning/jobs/{job_id}/adapter"), 409, code="adapter_not_ready")


def test_checkpoints_metrics_and_adapters_as_recorded(client, idle_db, file_id, idle_api):
    """What the worker writes (rows + files under the artifacts dir) is what the API serves."""
    import io
    import zipfile
    from pathlib import Path

    from service.shared.artifacts import ArtifactStore

    job_id = client.post("/v1/fine_tuning/jobs", json=dpo_body(file_id)).json()["id"]
    store = ArtifactStore(idle_api.settings["artifacts_dir"])
    for key in (store.adapter_key(job_id), f"{store.checkpoint_key(job_id, 2)}/adapter"):
        Path(store.path(key)).mkdir(parents=True)
        (store.path(key) / "adapter_config.json").write_text("{}")
    ckpt_id = new_id("ftckpt")
    idle_db.add(CheckpointRow(id=ckpt_id, job_id=job_id, step_number=2, metrics={"train_loss": 0.5},
                              storage_key=store.checkpoint_key(job_id, 2)))
    for step in (2, 1):
        idle_db.add(MetricRow(job_id=job_id, step=step, kind="train", values={"loss": 1.0 / step}))
    idle_db.scalar(select(JobRow).where(JobRow.id == job_id)).status = "succeeded"  # as the worker would
    idle_db.commit()

    ckpts = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    assert [(c["id"], c["step_number"], c["metrics"]) for c in ckpts] == [(ckpt_id, 2, {"train_loss": 0.5, "step": 2})]
    assert ckpts[0]["object"] == "fine_tuning.job.checkpoint" and ckpts[0]["fine_tuning_job_id"] == job_id
    metrics = client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]
    assert [(m["step"], m["values"]["loss"]) for m in metrics] == [(1, 1.0), (2, 0.5)]
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics", params={"min_step": 2}).json()["data"][0]["step"] == 2

    r = client.get(f"/v1/fine_tuning/jobs/{job_id}/adapter")
    assert r.headers["content-type"] == "application/zip"
    assert f'filename="{job_id}-adapter.zip"' in r.headers["content-disposition"]
    assert zipfile.ZipFile(io.BytesIO(r.content)).namelist() == ["adapter_config.json"]
    r = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{ckpt_id}/adapter")
    assert zipfile.ZipFile(io.BytesIO(r.content)).namelist() == ["adapter_config.json"]
    assert_envelope(client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints/ftckpt-nope/adapter"), 404)


def test_unknown_ids_and_routes_are_404_envelopes(client):
    for path in ("/v1/fine_tuning/jobs/ftjob-nope", "/v1/fine_tuning/jobs/ftjob-nope/events",
                 "/v1/fine_tuning/jobs/ftjob-nope/checkpoints", "/v1/fine_tuning/jobs/ftjob-nope/adapter"):
        assert_envelope(client.get(path), 404, code="not_found")
    assert_envelope(client.post("/v1/fine_tuning/jobs/ftjob-nope/cancel"), 404, code="not_found")
    assert_envelope(client.get("/v1/no/such/route"), 404, code="unknown_url")
    assert_envelope(client.delete("/v1/fine_tuning/jobs"), 405, code="method_not_allowed")
    assert client.get("/healthz").json() == {"status": "ok"}


def test_file_format_must_suit_the_method(client, idle_db):
    chat = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    uploaded = upload(client, chat).json()
    assert uploaded["format"] == "chat"
    before = job_count(idle_db)
    error = assert_envelope(client.post("/v1/fine_tuning/jobs", json=dpo_body(uploaded["id"])), 400,
                            param="training_file", code="invalid_file_format")
    assert "'preference'" in error["message"]
    assert job_count(idle_db) == before
    supervised = {"model": MODEL, "training_file": uploaded["id"], "method": {"type": "supervised"}}
    assert client.post("/v1/fine_tuning/jobs", json=supervised).status_code == 200


@pytest.mark.parametrize("method", ["dpo_last_turn", "dpo_multi_turn"])
def test_the_dialogue_dpo_baselines_are_methods(client, idle_db, method):
    seeds = upload(client, jsonl([{"user_turns": [f"hi {i}", "and then?"]} for i in range(4)]),
                   filename="seeds.jsonl").json()
    assert seeds["format"] == "dialogues"
    hp = {"rollouts": 32, "num_turns": 2, "beta": 0.2, "user": {"type": "dataset"},
          "reward": {"type": "function", "name": "remember_rules"}}
    body = {"model": MODEL, "training_file": seeds["id"], "method": {"type": method, method: {"hyperparameters": hp}}}
    r = client.post("/v1/fine_tuning/jobs", json=body)
    assert r.status_code == 200, r.text
    shown = r.json()["method"]
    assert shown["type"] == method and set(shown) == {"type", method}
    given = shown[method]["hyperparameters"]
    assert {k: given[k] for k in hp if k != "user"} == {k: v for k, v in hp.items() if k != "user"}
    assert given["user"]["type"] == "dataset" and given["loss_type"] == "sigmoid"  # defaults filled in
    before = job_count(idle_db)
    for bad, param, code in (({"eta": 1.0}, "eta", "unknown_parameter"),  # a REFUEL knob
                             ({"rollouts": 0}, "rollouts", "invalid_value")):
        wrong = {**body, "method": {"type": method, method: {"hyperparameters": {**hp, **bad}}}}
        assert_envelope(client.post("/v1/fine_tuning/jobs", json=wrong), 400,
                        param=f"method.{method}.hyperparameters.{param}", code=code)
    assert job_count(idle_db) == before


def test_broker_down_keeps_the_job_queued_with_a_warning(start_api, idle_api):
    from tests.infra import free_port

    server = start_api(**{**idle_api.settings, "broker_url": f"redis://127.0.0.1:{free_port()}/0"})  # nobody there
    with httpx.Client(base_url=server.url, timeout=60) as c:
        job = c.post("/v1/fine_tuning/jobs", json=dpo_body(upload(c).json()["id"]))
        assert job.status_code == 200 and job.json()["status"] == "queued"
        events = c.get(f"/v1/fine_tuning/jobs/{job.json()['id']}/events").json()["data"]
        assert events[0]["level"] == "warn" and "queue" in events[0]["message"]
