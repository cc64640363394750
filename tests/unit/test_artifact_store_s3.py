"""The artifact store with a bucket (service/shared/artifacts.py + service/shared/artifact_s3.py) against moto's
real S3 server: two stores with different local directories and one bucket stand for two machines."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from service.shared.artifact_s3 import MANIFEST, ArtifactStoreUnavailable, S3Location, S3Mirror
from service.shared.artifacts import ArtifactStore
from tests import infra


@pytest.fixture
def machines(s3_settings, tmp_path):
    """Two stores, as on the API machine and on a worker machine: own directories, one bucket."""
    location = S3Location(s3_settings["artifacts_s3_bucket"], s3_settings["artifacts_s3_prefix"],
                          s3_settings["artifacts_s3_endpoint_url"], s3_settings["artifacts_s3_region"])
    return (ArtifactStore(tmp_path / "api", S3Mirror(location)),
            ArtifactStore(tmp_path / "worker", S3Mirror(location)))


def bucket_keys(s3_server, store: ArtifactStore) -> set[str]:
    return s3_server.keys(store.remote.bucket)


def write_checkpoint(store: ArtifactStore, key: str) -> Path:
    path = store.path(key)
    (path / "adapter").mkdir(parents=True)
    (path / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    (path / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00weights" * 1000)
    (path / "state.pt").write_bytes(b"optimizer state")
    return path


def test_a_file_saved_on_one_machine_is_read_and_deleted_on_another(machines, s3_server):
    api, worker = machines
    key = api.save_file("file-abc", b'{"prompt": "hi"}\n')
    assert bucket_keys(s3_server, api) == {"team-a/rlhf/files/file-abc.jsonl"}  # the prefix, then the local layout

    path = worker.local_file(key)
    assert path == worker.root / "files" / "file-abc.jsonl" and path.read_bytes() == b'{"prompt": "hi"}\n'

    worker.delete_file(key)
    assert bucket_keys(s3_server, api) == set() and not path.exists()
    assert not worker.local_file("files/file-gone.jsonl").exists()  # in neither place: nothing appears


def test_a_directory_is_published_whole_and_fetched_whole(machines, s3_server):
    api, worker = machines
    key = worker.checkpoint_key("ftjob-1", 4)
    write_checkpoint(worker, key)
    worker.publish_dir(key)
    prefix = "team-a/rlhf/jobs/ftjob-1/checkpoints/step-000004/"
    assert bucket_keys(s3_server, api) == {prefix + name for name in (
        "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "state.pt", MANIFEST)}

    fetched = api.local_dir(key)
    assert sorted(p.relative_to(fetched).as_posix() for p in fetched.rglob("*") if p.is_file()) == [
        "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "state.pt"]  # no manifest locally
    assert (fetched / "state.pt").read_bytes() == b"optimizer state"
    assert [p.name for p in fetched.parent.iterdir()] == ["step-000004"]  # no temp directory left behind
    archive = zipfile.ZipFile(BytesIO(b"".join(api.zip_stream(f"{key}/adapter"))))
    assert sorted(archive.namelist()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_a_directory_without_its_manifest_is_never_fetched(machines):
    api, worker = machines
    key = worker.checkpoint_key("ftjob-1", 8)
    path = write_checkpoint(worker, key)
    # A worker that died mid-upload: every file but the manifest reached the bucket.
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        worker.remote.put_file(f"{key}/{f.relative_to(path).as_posix()}", f)

    assert not api.remote.has_dir(key)
    assert not api.local_dir(key).exists()
    with pytest.raises(FileNotFoundError):
        api.zip_stream(f"{key}/adapter")


def test_a_republished_directory_withdraws_its_old_manifest_first(machines):
    from botocore.exceptions import EndpointConnectionError

    api, worker = machines
    key = worker.adapter_key("ftjob-1")
    path = worker.path(key)
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    (path / "adapter_model.safetensors").write_bytes(b"old")
    worker.publish_dir(key)
    (path / "adapter_model.safetensors").write_bytes(b"new, and longer")

    # The bucket becomes unreachable once the first file of the new copy is up (as when the worker
    # dies there): a real botocore failure, raised by the worker's own client.
    sent = []

    def cut_after_one_upload(params, **_):
        if sent:
            raise EndpointConnectionError(endpoint_url="cut")
        sent.append(params["Key"])

    worker.remote._client().meta.events.register("before-parameter-build.s3.PutObject", cut_after_one_upload)
    with pytest.raises(ArtifactStoreUnavailable):
        worker.publish_dir(key)
    assert sent == [worker.remote.object_key(f"{key}/adapter_config.json")]
    assert not api.remote.has_dir(key)  # neither the old copy nor half of the new one counts
    assert not api.local_dir(key).exists()


def test_a_file_whose_size_differs_from_the_manifest_fails_and_leaves_nothing(machines, s3_server):
    api, worker = machines
    key = worker.adapter_key("ftjob-2")
    worker.path(key).mkdir(parents=True)
    (worker.path(key) / "adapter_model.safetensors").write_bytes(b"weights")
    worker.publish_dir(key)
    weights = api.remote.object_key(f"{key}/adapter_model.safetensors")
    s3_server.client().put_object(Bucket=api.remote.bucket, Key=weights, Body=b"truncated")
    with pytest.raises(ArtifactStoreUnavailable, match="not the size"):
        api.local_dir(key)
    assert not api.path("jobs/ftjob-2").exists() or not any(api.path("jobs/ftjob-2").iterdir())


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "files/../../x", "files//x", "files/./x",
                                 "files\\..\\x", ""])
def test_keys_that_could_leave_the_layout_are_refused(machines, key):
    api, _ = machines
    with pytest.raises(ValueError):
        api.remote.object_key(key)


def test_a_manifest_that_names_a_path_outside_its_directory_is_refused(machines, s3_server, tmp_path):
    api, _ = machines
    key = api.adapter_key("ftjob-evil")
    s3_server.client().put_object(Bucket=api.remote.bucket, Key=api.remote.object_key(f"{key}/{MANIFEST}"),
                                  Body=json.dumps({"files": {"../../../../escaped": 3}}).encode())
    with pytest.raises(ValueError):
        api.local_dir(key)
    assert not list(tmp_path.rglob("escaped"))


def test_an_unreachable_bucket_stores_nothing_and_says_so(tmp_path, monkeypatch):
    for name, value in infra.S3_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    nowhere = S3Mirror(S3Location("rlhf", endpoint_url=f"http://127.0.0.1:{infra.free_port()}", region="us-east-1"))
    store = ArtifactStore(tmp_path, nowhere)
    with pytest.raises(ArtifactStoreUnavailable):
        store.save_file("file-abc", b"{}\n")
    assert not list(tmp_path.rglob("*.jsonl"))  # the local copy went too: stored everywhere or nowhere
    with pytest.raises(ArtifactStoreUnavailable):
        store.check()


def test_without_a_bucket_the_api_never_imports_boto3():
    probe = "import sys, service.app; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    env = infra.service_env()
    env.pop("RLHF_ARTIFACTS_S3_BUCKET", None)
    done = subprocess.run([sys.executable, "-c", probe], cwd=infra.REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False False"
