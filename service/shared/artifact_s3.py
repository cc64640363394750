"""The shared copy of the artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2...).

Configured by RLHF_ARTIFACTS_S3_BUCKET (unset: no bucket, artifacts stay on the local disk only),
RLHF_ARTIFACTS_S3_PREFIX, RLHF_ARTIFACTS_S3_ENDPOINT_URL and RLHF_ARTIFACTS_S3_REGION. Credentials
come from boto3's standard chain (AWS_ACCESS_KEY_ID..., ~/.aws, instance roles); they are never read
or logged here. boto3 is imported on first use, so a process without a bucket never loads it.

An object's key is the prefix plus the same storage key as on disk (`files/{id}.jsonl`,
`jobs/{id}/...`). A directory (a checkpoint, an adapter) is complete in the bucket only once its
manifest, `{dir}/.rlhf-manifest.json`, exists: it is written after every file of the directory
and names each file with its size. A reader fetches exactly the files the manifest lists, so a
directory whose upload was cut short (no manifest) is never used, in the same way as the engine's
checkpoint is never used until its temp directory has been renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = ".rlhf-manifest.json"
_MISSING = ("404", "NoSuchKey", "NotFound")  # how S3 and its look-alikes say "no such object"
_RAISE = object()  # `_call`'s default: a missing object is an error like any other


class ArtifactStoreUnavailable(Exception):
    """The bucket could not be reached, refused the request (wrong name, no permission) or holds a
    copy that does not match its manifest."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def from_settings(cls, settings) -> S3Location | None:
        if not settings.artifacts_s3_bucket:
            return None
        return cls(settings.artifacts_s3_bucket, settings.artifacts_s3_prefix,
                   settings.artifacts_s3_endpoint_url or None, settings.artifacts_s3_region or None)


def safe_key(key: str) -> str:
    """A storage key as it may appear in the bucket: relative, `/`-separated, no `.`/`..` parts."""
    parts = key.split("/")
    if not key or "\\" in key or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"not a safe storage key: {key!r}")
    return key


class S3Mirror:
    def __init__(self, location: S3Location):
        self.location = location
        self.bucket = location.bucket
        prefix = location.prefix.strip("/")
        self.prefix = f"{safe_key(prefix)}/" if prefix else ""
        self._clients: dict[bool, object] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Mirror(s3://{self.bucket}/{self.prefix})"

    def object_key(self, key: str) -> str:
        return self.prefix + safe_key(key)

    # -- files -----------------------------------------------------------------------------------

    def put_file(self, key: str, path: Path) -> None:
        self._call("upload", key, lambda c, k: c.upload_file(str(path), self.bucket, k))

    def get_file(self, key: str, dest: Path) -> bool:
        """Download to `dest` (temp file + rename, so `dest` is never half written); False when the
        bucket has no such object."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        os.close(fd)
        try:
            found = self._call("download", key, lambda c, k: c.download_file(self.bucket, k, tmp), if_missing=False)
            if found is False:
                return False
            os.replace(tmp, dest)
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda c, k: c.delete_object(Bucket=self.bucket, Key=k))

    # -- directories -----------------------------------------------------------------------------

    def put_dir(self, key: str, directory: Path) -> None:
        """Upload every file under `directory`, then its manifest (which makes it complete)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(directory)
        files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
        # The same directory can be written again (a step replayed after a resume): withdraw the old
        # manifest first, so old and new files are never taken together as one complete directory.
        self.delete(f"{key}/{MANIFEST}")
        for name, path in files.items():
            self.put_file(f"{key}/{name}", path)
        manifest = json.dumps({"files": {name: path.stat().st_size for name, path in files.items()}}).encode()
        self._call("upload", f"{key}/{MANIFEST}",
                   lambda c, k: c.put_object(Bucket=self.bucket, Key=k, Body=manifest))

    def delete_dir(self, key: str) -> None:
        """Withdraw the manifest first (the directory stops being complete at once), then its files."""
        manifest = self._manifest(key)
        self.delete(f"{key}/{MANIFEST}")
        for name in manifest or {}:
            self.delete(f"{key}/{safe_key(name)}")

    def has_dir(self, key: str) -> bool:
        return self._manifest(key) is not None

    def get_dir(self, key: str, dest: Path) -> bool:
        """Download a complete directory to `dest` (built beside it, then renamed into place);
        False when the bucket has no complete copy."""
        manifest = self._manifest(key)
        if manifest is None:
            return False
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            for name, size in manifest.items():
                safe_key(name)  # the manifest came over the network: no name may leave the directory
                target = tmp / name
                if not self.get_file(f"{key}/{name}", target) or target.stat().st_size != size:
                    raise ArtifactStoreUnavailable(f"s3://{self.bucket}/{self.object_key(key)}: "
                                                   f"{name} is missing or not the size its manifest says")
            try:
                os.replace(tmp, dest)
            except OSError:
                if not dest.is_dir():  # else another request fetched the same directory first: keep it
                    raise
            return True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _manifest(self, key: str) -> dict[str, int] | None:
        body = self._call("read", f"{key}/{MANIFEST}",
                          lambda c, k: c.get_object(Bucket=self.bucket, Key=k)["Body"].read(), if_missing=None)
        return None if body is None else json.loads(body)["files"]

    # -- health ----------------------------------------------------------------------------------

    def ping(self) -> None:
        """The bucket exists and our credentials may use it (/readyz). One quick try, no retries."""
        try:
            self._client(quick=True).head_bucket(Bucket=self.bucket)
        except Exception as err:
            raise ArtifactStoreUnavailable(f"s3://{self.bucket}: {type(err).__name__}: {err}") from None

    # -- boto3 -----------------------------------------------------------------------------------

    def _call(self, action: str, key: str, request, if_missing=_RAISE):
        """Run one request on the object `key`. Every boto3/botocore failure becomes
        ArtifactStoreUnavailable; a missing object returns `if_missing` when the caller gave one."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        object_key = self.object_key(key)
        try:
            return request(self._client(), object_key)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if if_missing is not _RAISE and code in _MISSING:
                return if_missing
            failure = err
        except (BotoCoreError, Boto3Error) as err:
            failure = err
        # The message names the bucket, key and endpoint; botocore never puts credentials in it.
        log.warning("artifact store: could not %s s3://%s/%s: %s", action, self.bucket, object_key, failure)
        raise ArtifactStoreUnavailable(f"could not {action} s3://{self.bucket}/{object_key}: "
                                       f"{type(failure).__name__}: {failure}") from None

    def _client(self, quick: bool = False):
        # boto3 clients are thread-safe once built (the API serves requests from a thread pool);
        # building one is not, hence the lock.
        with self._lock:
            if quick not in self._clients:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=2 if quick else 10, read_timeout=5 if quick else 60,
                    retries={"mode": "standard", "max_attempts": 1 if quick else 3},
                    # MinIO and most self-hosted stores answer only path-style URLs (host/bucket/key).
                    s3={"addressing_style": "path"} if self.location.endpoint_url else None)
                self._clients[quick] = boto3.session.Session().client(
                    "s3", endpoint_url=self.location.endpoint_url, region_name=self.location.region, config=config)
            return self._clients[quick]
