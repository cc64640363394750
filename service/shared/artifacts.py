"""Where uploaded files, checkpoints and adapters live on disk (RLHF_ARTIFACTS_DIR).

Every path is built from ids the service generated, never from user text, and resolved under the
root so that a bad key can never escape it. Layout:

    files/{file_id}.jsonl
    jobs/{job_id}/checkpoints/step-{n:06d}/   a checkpoint   } a job's output directory, laid out
    jobs/{job_id}/adapter/                    final adapter  } as rlhf_engine/layout.py says

With a bucket configured (RLHF_ARTIFACTS_S3_BUCKET, service/shared/artifact_s3.py) the local directory is
this machine's working copy and the bucket is the shared one: every finished write is also sent
there (`save_file`, `publish_dir`), and a read that finds no local copy fetches it from there first
(`local_file`, `local_dir`). Without a bucket those calls only touch the local disk, as before.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from rlhf_engine import layout
from service.shared.artifact_s3 import ArtifactStoreUnavailable, S3Location, S3Mirror
from service.shared.ziparchive import stream_zip

__all__ = ["ArtifactStore", "ArtifactStoreUnavailable"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ArtifactStore:
    def __init__(self, root: str | Path, remote: S3Mirror | None = None):
        self.root = Path(root).resolve()
        self.remote = remote

    @classmethod
    def at(cls, root: str | Path, location: S3Location | None) -> ArtifactStore:
        return cls(root, S3Mirror(location) if location else None)

    @classmethod
    def from_settings(cls, settings) -> ArtifactStore:
        return cls.at(settings.artifacts_dir, S3Location.from_settings(settings))

    def path(self, key: str) -> Path:
        """The absolute path of a storage key; refuses anything that leaves the root."""
        p = (self.root / key).resolve()
        if p != self.root and self.root not in p.parents:
            raise ValueError(f"storage key escapes the artifacts root: {key!r}")
        return p

    @staticmethod
    def _id(value: str) -> str:
        if not _SAFE_ID.match(value):
            raise ValueError(f"not a safe id: {value!r}")
        return value

    # Uploaded files.
    def file_key(self, file_id: str) -> str:
        return f"files/{self._id(file_id)}.jsonl"

    def save_file(self, file_id: str, data: bytes) -> str:
        """Write atomically (temp file + rename) so a crash never leaves half a dataset."""
        tmp = self.path(self.file_key(file_id)).with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        return self.save_file_from(file_id, tmp)

    def spool_dir(self) -> Path:
        """Where an upload is written as it arrives: beside the files, so that storing it is a
        rename (`save_file_from`). Files left here by a crash are partial uploads, never rows."""
        path = self.path("files/.incoming")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_file_from(self, file_id: str, src: Path) -> str:
        """Store a complete local file (on this store's filesystem: `spool_dir`) by renaming it
        into place, then send it to the bucket; `src` is gone afterwards either way."""
        key = self.file_key(file_id)
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        if self.remote is not None:
            try:
                self.remote.put_file(key, dest)
            except ArtifactStoreUnavailable:
                dest.unlink(missing_ok=True)  # stored everywhere or nowhere: the caller writes no row
                raise
        return key

    def local_file(self, key: str) -> Path:
        """The local path of a stored file, fetched from the bucket first if this machine has no
        copy. Without a bucket (or when the bucket has none either) the path may not exist."""
        path = self.path(key)
        if self.remote is not None and not path.exists():
            self.remote.get_file(key, path)
        return path

    def delete_file(self, key: str) -> None:
        """Remove a file here and in the bucket. Other machines' local copies stay (a cache of an
        id that is never reused)."""
        self.path(key).unlink(missing_ok=True)
        if self.remote is not None:
            self.remote.delete(key)

    # Directories (checkpoints, adapters): written locally by the engine, complete once renamed
    # into place (rlhf_engine/checkpoint.py) or once `save_adapter` returned.
    def publish_dir(self, key: str) -> None:
        """Send a complete local directory to the bucket (no-op without one)."""
        if self.remote is not None:
            self.remote.put_dir(key, self.path(key))

    def local_dir(self, key: str) -> Path:
        """The local path of a stored directory, fetched from the bucket first if this machine has
        no copy; only a directory complete in the bucket (its manifest written) is fetched."""
        path = self.path(key)
        if self.remote is not None and not path.is_dir():
            self.remote.get_dir(key, path)
        return path

    def delete_dir(self, key: str) -> None:
        """Remove a directory here and in the bucket (a deleted model's adapter)."""
        if self.remote is not None:
            self.remote.delete_dir(key)
        shutil.rmtree(self.path(key), ignore_errors=True)

    def check(self) -> None:
        """Raise ArtifactStoreUnavailable if the bucket cannot be used (/readyz)."""
        if self.remote is not None:
            self.remote.ping()

    # Jobs.
    def job_key(self, job_id: str) -> str:
        return f"jobs/{self._id(job_id)}"

    def checkpoint_key(self, job_id: str, step: int) -> str:
        return f"{self.job_key(job_id)}/{layout.checkpoint_path(step)}"

    def adapter_key(self, job_id: str) -> str:
        return f"{self.job_key(job_id)}/{layout.ADAPTER}"

    def merged_key(self, job_id: str) -> str:
        return f"{self.job_key(job_id)}/{layout.MERGED}"

    def zip_stream(self, key: str) -> Iterator[bytes]:
        """A directory as a zip archive (files at the archive's root), in chunks. The directory is
        fetched and checked now, so a missing one raises here rather than mid-download."""
        base = self.local_dir(key)
        if not base.is_dir():
            raise FileNotFoundError(key)
        return stream_zip(base)
