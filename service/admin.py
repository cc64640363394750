"""Operator CLI for tenants and keys: `python -m service.admin ...` (or `rlhf-admin ...`).

    create-project NAME                  a new project (tenant)
    create-key --project NAME [--name N] prints the key once; only its hash is stored
    revoke-key KEY_ID                    the key stops working at once
    list-keys                            id, project, name, prefix, created, revoked

Reads RLHF_DATABASE_URL like the service. Creating the first key switches the API from open mode
(everything is project "default") to "every /v1 request needs a key".
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.auth import generate_key, hash_key
from service.shared.settings import get_settings
from service.shared.store.models import ApiKeyRow, ProjectRow, new_id, now
from service.shared.store.session import session_scope

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class AdminError(Exception):
    pass


def _project(s: Session, name: str) -> ProjectRow:
    row = s.scalar(select(ProjectRow).where(ProjectRow.name == name))
    if row is None:
        raise AdminError(f"no project named {name!r} (create it with: create-project {name})")
    return row


def create_project(db_url: str, name: str) -> ProjectRow:
    if not _NAME.match(name):
        raise AdminError("a project name is 1-64 letters, digits, '-' or '_'")
    with session_scope(db_url) as s:
        if s.scalar(select(ProjectRow).where(ProjectRow.name == name)) is not None:
            raise AdminError(f"project {name!r} already exists")
        row = ProjectRow(id=new_id("proj"), name=name)
        s.add(row)
    return row


def create_key(db_url: str, project: str, name: str | None = None) -> tuple[ApiKeyRow, str]:
    """Returns the row and the secret; the secret exists nowhere else afterwards."""
    secret = generate_key()
    with session_scope(db_url) as s:
        row = ApiKeyRow(id=new_id("key"), project_id=_project(s, project).id, name=name,
                        key_hash=hash_key(secret), prefix=secret[:12])
        s.add(row)
    return row, secret


def revoke_key(db_url: str, key_id: str) -> ApiKeyRow:
    with session_scope(db_url) as s:
        row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.id == key_id))
        if row is None:
            raise AdminError(f"no key with id {key_id!r}")
        if row.revoked_at is None:
            row.revoked_at = now()
    return row


def list_keys(db_url: str) -> list[dict]:
    with session_scope(db_url) as s:
        rows = s.execute(select(ApiKeyRow, ProjectRow.name).join(ProjectRow, ProjectRow.id == ApiKeyRow.project_id)
                         .order_by(ApiKeyRow.seq)).all()
        return [{"id": k.id, "project": p, "name": k.name, "prefix": k.prefix, "created_at": k.created_at,
                 "revoked_at": k.revoked_at} for k, p in rows]


def _when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M") if ts else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf-admin", description="Manage projects and API keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create-project", help="create a project (tenant)").add_argument("name")
    key = sub.add_parser("create-key", help="create an API key; printed once")
    key.add_argument("--project", required=True)
    key.add_argument("--name", default=None)
    sub.add_parser("revoke-key", help="revoke an API key by id").add_argument("key_id")
    sub.add_parser("list-keys", help="list API keys (never the secrets)")
    args = parser.parse_args(argv)

    db_url = get_settings().database_url
    if db_url.startswith("sqlite"):  # the embedded store migrates itself, as the API does
        from service import migrate

        migrate.upgrade(db_url)
    try:
        if args.command == "create-project":
            row = create_project(db_url, args.name)
            print(f"created project {row.name} ({row.id})")
        elif args.command == "create-key":
            row, secret = create_key(db_url, args.project, args.name)
            print(f"key id: {row.id}\nproject: {args.project}\n"
                  f"api key (shown once, store it now): {secret}")
        elif args.command == "revoke-key":
            row = revoke_key(db_url, args.key_id)
            print(f"revoked {row.id}")
        else:
            print(f"{'id':<32} {'project':<20} {'name':<16} {'prefix':<13} {'created':<17} revoked")
            for k in list_keys(db_url):
                print(f"{k['id']:<32} {k['project']:<20} {k['name'] or '-':<16} {k['prefix']:<13} "
                      f"{_when(k['created_at']):<17} {_when(k['revoked_at'])}")
    except AdminError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
