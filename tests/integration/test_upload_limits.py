"""Uploads under load: a big upload grows the API's memory by a bounded amount (the body is spooled
to disk and validated line by line), and concurrent uploads are capped per key (429) and per
process (503) before their bodies are read."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.helpers import GOOD_DATASET, preference_line
from tests.integration.tenants import make_tenant, own_server

pytestmark = pytest.mark.integration

BIG_MB = 60


def big_dataset(megabytes: int) -> bytes:
    line = (json.dumps(preference_line("tell me about the weather " * 20, "It is sunny. " * 20,
                                       "I cannot know. " * 20)) + "\n").encode()
    return line * (megabytes * 2**20 // len(line))


class PeakRss(threading.Thread):
    """Samples a process's resident memory every 10 ms until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process, self.peak, self.done = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)


def test_a_big_upload_grows_api_memory_by_a_bounded_amount(start_api, make_database, tmp_path_factory, tmp_path):
    server = own_server(start_api, make_database, tmp_path_factory, rate_limit_per_minute=0)
    data = big_dataset(BIG_MB)
    path = tmp_path / "big.jsonl"
    path.write_bytes(data)
    with httpx.Client(base_url=server.url, timeout=120) as client:
        assert client.post("/v1/files", files={"file": ("warm.jsonl", GOOD_DATASET)},
                           data={"purpose": "fine-tune"}).status_code == 200  # imports and pools warmed
        before = psutil.Process(server.proc.pid).memory_info().rss
        sampler = PeakRss(server.proc.pid)
        sampler.start()
        with open(path, "rb") as f:  # streamed from disk: the client holds no copy either
            r = client.post("/v1/files", files={"file": ("big.jsonl", f)}, data={"purpose": "fine-tune"})
        sampler.done.set()
        sampler.join()
        assert r.status_code == 200, r.text[:300]
        stored = client.get(f"/v1/files/{r.json()['id']}/content").content
    growth_mb = (sampler.peak - before) / 2**20
    # Holding the body, its text and its parsed examples cost about five times its size (300 MB
    # here); spooled and scanned line by line it is a few chunk buffers.
    assert growth_mb < 25, f"API memory grew by {growth_mb:.0f} MB for a {BIG_MB} MB upload"
    assert r.json()["bytes"] == len(data) and hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    assert not list((Path(server.settings["artifacts_dir"], "files", ".incoming")).iterdir())  # no spool left


class HeldUpload(threading.Thread):
    """An upload whose body stops half-way until released: it holds its slot meanwhile."""

    def __init__(self, url: str, key: str):
        super().__init__(daemon=True)
        self.url, self.key, self.release, self.response = url, key, threading.Event(), None

    def body(self):
        boundary = "held"
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.jsonl\"\r\n"
               "Content-Type: application/jsonl\r\n\r\n").encode()
        self.release.wait(30)
        yield GOOD_DATASET + f"\r\n--{boundary}--\r\n".encode()

    def run(self) -> None:
        self.response = httpx.post(f"{self.url}/v1/files", content=self.body(), timeout=60, headers={
            "authorization": f"Bearer {self.key}", "content-type": "multipart/form-data; boundary=held"})


def test_concurrent_uploads_are_capped_per_key_and_per_process(start_api, make_database, tmp_path_factory):
    server = own_server(start_api, make_database, tmp_path_factory, max_concurrent_uploads_per_key=1,
                        max_concurrent_uploads=2, rate_limit_per_minute=0)
    a, b, c = (make_tenant(server) for _ in range(3))
    held = [HeldUpload(server.url, a.key), HeldUpload(server.url, b.key)]
    for upload in held:
        upload.start()
    time.sleep(1.5)  # both are past the gate and stuck in their bodies
    try:
        with a.client(server) as ca, c.client(server) as cc:
            files = {"file": ("d.jsonl", GOOD_DATASET)}
            per_key = ca.post("/v1/files", files=files, data={"purpose": "fine-tune"})
            assert per_key.status_code == 429 and per_key.headers["retry-after"]
            assert per_key.json()["error"]["code"] == "too_many_concurrent_uploads"
            per_process = cc.post("/v1/files", files=files, data={"purpose": "fine-tune"})
            assert per_process.status_code == 503 and per_process.headers["retry-after"]
            assert per_process.json()["error"]["code"] == "server_busy"
            assert cc.get("/v1/files").status_code == 200  # only uploads are held back
            with httpx.Client(base_url=server.url, timeout=30) as anon:  # refused before its body, too
                assert anon.post("/v1/files", files=files, data={"purpose": "fine-tune"}).status_code == 401
            for upload in held:
                upload.release.set()
                upload.join(30)
                assert upload.response is not None and upload.response.status_code == 200, upload.response
            # Finished uploads give their slots back.
            assert ca.post("/v1/files", files=files, data={"purpose": "fine-tune"}).status_code == 200
            assert cc.post("/v1/files", files=files, data={"purpose": "fine-tune"}).status_code == 200
    finally:
        for upload in held:
            upload.release.set()
