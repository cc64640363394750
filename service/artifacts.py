"""Where uploaded files, checkpoints and adapters live on disk (RLHF_ARTIFACTS_DIR).

Every path is built from ids the service generated, never from user text, and resolved under the
root so that a bad key can never escape it. Layout:

    files/{file_id}.jsonl
    jobs/{job_id}/checkpoints/step-{n:06d}/{adapter,state}/
    jobs/{job_id}/adapter/               final LoRA adapter (PEFT layout)
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

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
        key = self.file_key(file_id)
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return key

    # Jobs.
    def job_key(self, job_id: str) -> str:
        return f"jobs/{self._id(job_id)}"

    def checkpoint_key(self, job_id: str, step: int) -> str:
        return f"{self.job_key(job_id)}/checkpoints/step-{int(step):06d}"

    def adapter_key(self, job_id: str) -> str:
        return f"{self.job_key(job_id)}/adapter"

    def zip_dir(self, key: str) -> bytes:
        """A directory as a zip archive (flat: the files sit at the archive's root)."""
        base = self.path(key)
        if not base.is_dir():
            raise FileNotFoundError(key)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(base.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(base).as_posix())
        return buf.getvalue()
