"""service.shared.ziparchive.stream_zip: a valid archive, produced in bounded chunks."""

from __future__ import annotations

import io
import os
import zipfile

from service.shared.ziparchive import stream_zip


def test_stream_zip_roundtrip_in_bounded_chunks(tmp_path):
    weights = os.urandom(300_000)
    (tmp_path / "model.safetensors").write_bytes(weights)
    (tmp_path / "config.json").write_text('{"a": 1}' * 1000)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.txt").write_text("hello\n")

    chunks = list(stream_zip(tmp_path, chunk_size=4096))
    assert len(chunks) > 300_000 // 4096  # sent while written, not built whole
    assert max(len(c) for c in chunks) <= 4096 + 512  # one block plus at most a header

    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None  # every CRC checks out
    assert sorted(archive.namelist()) == ["config.json", "model.safetensors", "tok/vocab.txt"]
    assert archive.read("model.safetensors") == weights
    assert archive.read("tok/vocab.txt") == b"hello\n"
    assert archive.getinfo("model.safetensors").compress_type == zipfile.ZIP_STORED  # weights: not deflated
    assert archive.getinfo("config.json").compress_type == zipfile.ZIP_DEFLATED


def test_stream_zip_of_an_empty_directory_is_an_empty_archive(tmp_path):
    archive = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip(tmp_path))))
    assert archive.namelist() == []
