"""The S3 artifact store with every real part: the API and the workers as if on different machines
(each its own RLHF_ARTIFACTS_DIR), one bucket on moto's S3 server, Postgres, Redis, Celery and the
tiny model. Nothing reaches another machine's directory except through the bucket."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest

from tests import infra
from tests.integration.failure_helpers import make_stack  # noqa: F401
from tests.integration.helpers import assert_envelope, upload

pytestmark = pytest.mark.integration


def local_files(root: str | Path) -> set[str]:
    root = Path(root)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_api_and_worker_on_two_machines_share_one_bucket(make_stack, s3_settings, s3_server, tmp_path):
    stack = make_stack(shared=s3_settings)
    api_dir, worker_dir = stack.settings["artifacts_dir"], tmp_path / "worker-machine"
    bucket, prefix = s3_settings["artifacts_s3_bucket"], s3_settings["artifacts_s3_prefix"] + "/"
    assert stack.client.get("/readyz").status_code == 200

    file_id = stack.file_id()
    assert s3_server.keys(bucket) == {f"{prefix}files/{file_id}.jsonl"}

    stack.start_worker(artifacts_dir=str(worker_dir), artifacts_clean_local=True)
    job_id = stack.create_job(n_epochs=1, checkpoint_interval=2)  # 4 steps, checkpoints at 2 and 4
    job = stack.wait_final(job_id, timeout=120)
    assert job["status"] == "succeeded", (job, stack.logs())

    # The worker fetched the dataset from the bucket into its own directory and, the job over,
    # dropped its working copy of the job (RLHF_ARTIFACTS_CLEAN_LOCAL); the dataset stays cached.
    # The API's directory has only the upload so far.
    stack.wait_row(job_id, lambda r: not any(f.startswith("jobs/") for f in local_files(worker_dir)),
                   timeout=30, what="the worker's local copy removed")
    assert f"files/{file_id}.jsonl" in local_files(worker_dir)
    assert local_files(api_dir) == {f"files/{file_id}.jsonl"}
    job_keys = {k.removeprefix(f"{prefix}jobs/{job_id}/") for k in s3_server.keys(bucket, f"{prefix}jobs/")}
    for directory in ("checkpoints/step-000002", "checkpoints/step-000004"):
        assert {f"{directory}/state.pt", f"{directory}/adapter/adapter_model.safetensors",
                f"{directory}/.rlhf-manifest.json"} <= job_keys, job_keys
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors",
            "adapter/.rlhf-manifest.json"} <= job_keys

    # The API serves the adapters from the bucket.
    response = stack.client.get(f"/v1/fine_tuning/jobs/{job_id}/adapter")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip", response.text
    names = set(zipfile.ZipFile(io.BytesIO(response.content)).namelist())
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names and ".rlhf-manifest.json" not in names
    checkpoint = max(stack.checkpoints(job_id), key=lambda c: c["step_number"])
    response = stack.client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint['id']}/adapter")
    assert response.status_code == 200
    assert "adapter_model.safetensors" in zipfile.ZipFile(io.BytesIO(response.content)).namelist()

    # A file whose local copy is gone (another API replica uploaded it) comes from the bucket too.
    Path(api_dir, "files", f"{file_id}.jsonl").unlink()
    assert stack.client.get(f"/v1/files/{file_id}/content").content.startswith(b'{"input"')

    # Deleting the file deletes its object.
    assert stack.client.delete(f"/v1/files/{file_id}").status_code == 200
    # (The job's own results file, fine-tune-results, is another file and stays.)
    assert f"{prefix}files/{file_id}.jsonl" not in s3_server.keys(bucket, f"{prefix}files/")


def test_a_worker_on_another_machine_resumes_from_the_bucket(make_stack, s3_settings, tmp_path):
    stack = make_stack(lease_seconds=5, shared=s3_settings)
    first = stack.start_worker(artifacts_dir=str(tmp_path / "machine-a"))
    job_id = stack.create_job(n_epochs=3, checkpoint_interval=4)  # 12 steps, checkpoints every 4
    stack.wait_row(job_id, lambda r: r["steps_completed"] >= 6, timeout=120, what="step 6")
    first.kill_all()  # the whole machine is gone, its directory with it as far as others can tell

    stack.start_worker(artifacts_dir=str(tmp_path / "machine-b"))  # its reaper re-sends the job
    job = stack.wait_final(job_id, timeout=120)
    assert job["status"] == "succeeded" and job["steps_completed"] == job["total_steps"] == 12, (job, stack.logs())
    assert stack.metric_steps(job_id) == list(range(1, 13))  # every step once
    resumed = [int(m.group(1)) for msg in stack.messages(job_id)
               if (m := re.match(r"Resuming from checkpoint at step (\d+)", msg))]
    assert len(resumed) == 1 and resumed[0] >= 4 and resumed[0] % 4 == 0, stack.messages(job_id)
    # Machine B fetched that checkpoint from the bucket and has nothing older: it trained from there.
    on_b = sorted(p.name for p in (tmp_path / "machine-b" / "jobs" / job_id / "checkpoints").iterdir())
    assert on_b[0] == f"step-{resumed[0]:06d}", on_b
    response = stack.client.get(f"/v1/fine_tuning/jobs/{job_id}/adapter")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"


@pytest.mark.parametrize("broken", ["unreachable endpoint", "no such bucket"])
def test_an_upload_the_bucket_cannot_take_is_refused_and_leaves_nothing(make_stack, s3_settings, broken):
    bad = dict(s3_settings)
    if broken == "unreachable endpoint":
        bad["artifacts_s3_endpoint_url"] = f"http://127.0.0.1:{infra.free_port()}"
    else:
        bad["artifacts_s3_bucket"] = "no-such-bucket"
    stack = make_stack(shared=bad)

    response = upload(stack.client, filename="lost.jsonl")
    error = assert_envelope(response, 503, code="artifact_store_unavailable")
    assert "not stored" in error["message"]
    assert infra.S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"] not in stack.api.log()  # the failure is logged, never the keys
    assert stack.client.get("/v1/files").json()["data"] == []
    assert local_files(stack.settings["artifacts_dir"]) == set()

    ready = stack.client.get("/readyz")
    assert_envelope(ready, 503, param="artifact_store", code="dependency_unavailable")
