"""Helpers for tests that need their own API server: a fresh migrated database, artifacts dir and
queue (so creating keys never switches the shared `idle_api` out of open mode), and projects
with keys made through service.admin (the functions `rlhf-admin` runs)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx

from service import admin, migrate
from tests import infra


def own_server(start_api, make_database, tmp_path_factory, **settings) -> infra.ApiServer:
    database_url = make_database()
    migrate.upgrade(database_url)  # in-process: test_migrations covers `python -m service.migrate`
    return start_api(database_url=database_url, queue=f"rlhf-own-{uuid.uuid4().hex[:8]}",
                     artifacts_dir=str(tmp_path_factory.mktemp("own-artifacts")), **settings)


@dataclass
class Tenant:
    project: str
    key_id: str
    key: str

    def client(self, server: infra.ApiServer) -> httpx.Client:
        return httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {self.key}"})


def make_tenant(server: infra.ApiServer, project: str | None = None) -> Tenant:
    db = server.settings["database_url"]
    name = project or f"p-{uuid.uuid4().hex[:8]}"
    admin.create_project(db, name)
    row, secret = admin.create_key(db, name, name="test")
    return Tenant(project=name, key_id=row.id, key=secret)
