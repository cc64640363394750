"""`/v1/files`: upload (validated line by line), list, retrieve, download, delete.

An upload is never held in memory: it is copied to a spool file beside the stored files as it is
read (413 past the limit), validated line by line from there, and stored by renaming it. How many
uploads run at once is capped before the body is read (service/api/limits.py, UploadGate).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy import select

from rlhf_engine.data import formats
from service.api.auth import CallerDep
from service.api.deps import DB, Artifacts, SettingsDep
from service.api.errors import APIError, artifact_store_unavailable, bad_request
from service.api.lookups import get_file
from service.api.pagination import paginate
from service.api.schemas import Deleted, FileObject, ListObject
from service.shared.artifacts import ArtifactStoreUnavailable
from service.shared.store.models import ACTIVE, FileRow, JobRow, new_id

log = logging.getLogger(__name__)
router = APIRouter(prefix="/files", tags=["files"])

PURPOSES = ("fine-tune",)
MAX_REPORTED_ISSUES = 20
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Spooled:
    path: Path
    size: int
    sha256: str


def _spool(upload: UploadFile, into: Path, limit: int) -> Spooled:
    """Copy the upload to a file under `into` in 1 MiB chunks, hashing as it goes; past `limit`
    bytes it stops with 413. Memory holds one chunk, whatever the file's size. (Starlette has
    already spooled the part to a temporary file as it arrived; this copy is on the store's
    filesystem, so keeping it is a rename.)"""
    digest, size = hashlib.sha256(), 0
    fd, name = tempfile.mkstemp(dir=into, suffix=".part")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := upload.file.read(_CHUNK):
                size += len(chunk)
                if limit > 0 and size > limit:
                    raise APIError(413, f"File too large: the limit is {limit} bytes.", param="file",
                                   code="file_too_large")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Spooled(path, size, digest.hexdigest())


def _display_name(filename: str | None) -> str:
    # Metadata only, shown back to the user; storage uses the generated id. Drop any directory
    # part and control characters (a name ends up in logs and Content-Disposition headers).
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:255] if name not in ("", ".", "..") else "upload.jsonl"


def _dataset_error(err: formats.DatasetError) -> APIError:
    issues = list(err.issues)[:MAX_REPORTED_ISSUES]
    if not issues:
        return bad_request(f"Invalid file: {err}", param="file", code="invalid_file")
    first = issues[0]
    where = ", ".join(p for p in (f"line {first.line}" if first.line is not None else None,
                                  f"field {first.field}" if first.field else None) if p)
    message = f"{where}: {first.message}" if where else first.message
    if len(issues) > 1:
        message += f" (and {len(issues) - 1} more, listed in 'issues')"
    return APIError(400, message, param=first.field, code=first.code, extra={"issues": [
        {"line": i.line, "field": i.field, "code": i.code, "message": i.message} for i in issues]})


# Plain `def` handlers run in FastAPI's thread pool: parsing and the database calls block.
@router.post("", response_model=FileObject)
def upload_file(db: DB, store: Artifacts, settings: SettingsDep, caller: CallerDep,
                file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]) -> FileObject:
    if purpose not in PURPOSES:
        raise bad_request(f"Invalid purpose {purpose!r}; supported: {', '.join(PURPOSES)}.", param="purpose")
    spooled = _spool(file, store.spool_dir(), settings.max_upload_bytes)
    try:
        parsed = formats.scan_jsonl_file(spooled.path, max_examples=settings.max_examples_per_file)
        file_id = new_id("file")
        key = store.save_file_from(file_id, spooled.path)
    except formats.DatasetError as err:
        raise _dataset_error(err) from None
    except ArtifactStoreUnavailable:
        raise artifact_store_unavailable("the file was not stored") from None
    finally:
        spooled.path.unlink(missing_ok=True)  # renamed into place, unless validating or storing failed
    row = FileRow(id=file_id, project_id=caller.project_id, filename=_display_name(file.filename), purpose=purpose,
                  bytes=spooled.size, storage_key=key, format=parsed.format, num_examples=parsed.num_examples,
                  sha256=spooled.sha256)
    db.add(row)
    try:
        db.commit()
    except BaseException:
        try:  # no orphan in the store when the row did not land
            store.delete_file(key)
        except ArtifactStoreUnavailable:
            log.warning("file %s: its row did not land and its bytes stay in the bucket (orphan)", file_id)
        raise
    return FileObject.from_row(row)


@router.get("", response_model=ListObject[FileObject])
def list_files(db: DB, caller: CallerDep, after: str | None = None,
               limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
               order: Literal["asc", "desc"] = "desc", purpose: str | None = None) -> ListObject[FileObject]:
    stmt = select(FileRow).where(FileRow.project_id == caller.project_id)
    if purpose is not None:
        stmt = stmt.where(FileRow.purpose == purpose)
    rows, has_more = paginate(db, stmt, FileRow, after=after, limit=limit, newest_first=order == "desc")
    return ListObject.page([FileObject.from_row(r) for r in rows], has_more)


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(db: DB, caller: CallerDep, file_id: str) -> FileObject:
    return FileObject.from_row(get_file(db, caller.project_id, file_id))


@router.get("/{file_id}/content", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes"}})
def file_content(db: DB, store: Artifacts, caller: CallerDep, file_id: str) -> FileResponse:
    row = get_file(db, caller.project_id, file_id)
    try:
        path = store.local_file(row.storage_key)
    except ArtifactStoreUnavailable:
        raise artifact_store_unavailable("the file's bytes could not be fetched") from None
    if not path.exists():
        raise APIError(404, "The file's bytes are missing from the artifact store.", code="file_content_not_found")
    return FileResponse(path, media_type="application/octet-stream")


@router.delete("/{file_id}", response_model=Deleted)
def delete_file(db: DB, store: Artifacts, caller: CallerDep, file_id: str) -> Deleted:
    row = get_file(db, caller.project_id, file_id)
    user = db.scalar(select(JobRow.id).where(
        JobRow.project_id == caller.project_id, JobRow.status.in_(ACTIVE),
        (JobRow.training_file == file_id) | (JobRow.validation_file == file_id)).limit(1))
    if user is not None:
        raise APIError(409, f"File {file_id!r} is used by job {user!r}, which has not finished.",
                       param="file_id", code="file_in_use")
    db.delete(row)
    db.commit()
    # Bytes go only after the row is gone: a crash (or a bucket that fails) in between leaves an
    # orphan file, never a row that points at nothing.
    try:
        store.delete_file(row.storage_key)
    except ArtifactStoreUnavailable:
        log.warning("file %s: deleted, but its bytes stay in the bucket (orphan)", file_id)
    return Deleted(id=file_id, object="file")
