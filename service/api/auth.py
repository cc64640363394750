"""API keys: who is calling, and which project (tenant) their request may see.

Keys are `rlhf-` + 43 random URL-safe characters (256 bits). Only their sha256 is stored: a key
that random needs no slow hash, and a database leak reveals no usable key. The key is shown once,
by `python -m service.admin create-key`.

Compatibility rule: while the database holds no active key (and RLHF_AUTH_REQUIRED is off) the
API runs open, as project "default", and ignores whatever `Authorization` header a client sends
(the openai client always sends one). The first key created switches every /v1 request to
"key required", for good: revoking every key later locks the API rather than reopening it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api import limits
from service.api.deps import DB, SettingsDep
from service.api.errors import APIError
from service.shared.settings import Settings, get_settings
from service.shared.store.models import DEFAULT_PROJECT, ApiKeyRow
from service.shared.store.session import session_scope

KEY_PREFIX = "rlhf-"


@dataclass(frozen=True)
class Caller:
    project_id: str
    key_id: str | None  # None in open mode

    @property
    def limit_key(self) -> str:
        """What per-key limits count against: the key, or in open mode the one project."""
        return self.key_id or f"project:{self.project_id}"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


def _find_key(db: Session, secret: str) -> ApiKeyRow | None:
    digest = hash_key(secret)
    row = db.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest, ApiKeyRow.revoked_at.is_(None)))
    # The lookup is by hash, so timing says nothing about the secret; compare anyway, in constant time.
    return row if row is not None and hmac.compare_digest(row.key_hash, digest) else None


# Databases (their engines) known to hold a key. Keys are never deleted, so once true it stays true
# and the check costs no query; while the API runs open it is asked every time, so the first key
# created locks the API at once.
_locked_databases: set[object] = set()


def auth_enabled(db: Session, required: bool) -> bool:
    # Any key ever created counts, revoked ones too: revoking the last key must lock the API,
    # not silently reopen it to everyone as project "default".
    if required:
        return True
    database = db.get_bind()
    if database in _locked_databases:
        return True
    if db.scalar(select(ApiKeyRow.id).limit(1)) is None:
        return False
    _locked_databases.add(database)
    return True


def _unauthorized(message: str, code: str) -> APIError:
    return APIError(401, message, code=code, headers={"www-authenticate": "Bearer"})


# Declares the bearer scheme in the OpenAPI schema; the checks below do the work.
_scheme = HTTPBearer(auto_error=False, description="An API key from `rlhf-admin create-key`.")


def identify(request: Request, db: Session, settings: Settings) -> Caller:
    """Who is calling (401 if nobody may), without counting the request against a rate limit."""
    token = _bearer(request)
    row = _find_key(db, token) if token and len(token) <= 256 else None
    if row is None:
        if not auth_enabled(db, settings.auth_required):
            return Caller(project_id=DEFAULT_PROJECT, key_id=None)
        if token is None:
            raise _unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                                "missing_api_key")
        raise _unauthorized("Incorrect API key provided.", "invalid_api_key")
    return Caller(project_id=row.project_id, key_id=row.id)


def current_caller(request: Request, db: DB, settings: SettingsDep,
                   _: Annotated[object, Depends(_scheme)] = None) -> Caller:
    caller = identify(request, db, settings)
    # Give the connection back before the route runs: dependencies and the route are separate trips
    # through the thread pool, and a burst of requests that each held a connection while waiting for
    # a thread, while every thread waited for a connection, deadlocked until the pool timed out.
    db.commit()
    if caller.key_id is not None:
        limits.check_rate(caller.key_id, settings)
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


def refusal(request: Request) -> APIError | None:
    """The 401 (or 429) this /v1 request gets, checked on its own. FastAPI parses a JSON body
    before it runs the route's dependencies, so a request it cannot parse never reaches
    `current_caller`; the validation error handler asks here first, so that a caller without a
    valid key learns nothing about the request it sent (service/api/errors.py)."""
    if not request.url.path.startswith("/v1/"):
        return None
    settings = get_settings()
    try:
        with session_scope(settings.database_url) as db:
            current_caller(request, db, settings)
    except APIError as err:
        return err
    return None


def limit_key(request: Request) -> str:
    """The caller's `limit_key`, for limits decided before the route runs (service/api/limits.py
    UploadGate); raises the 401 APIError a request without valid credentials gets."""
    settings = get_settings()
    with session_scope(settings.database_url) as db:
        return identify(request, db, settings).limit_key
