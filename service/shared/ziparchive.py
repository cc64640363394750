"""Zip a directory as a stream of chunks, so a multi-GB model download never sits in memory.

zipfile writes to any object with `write`; given one that cannot seek, it puts each entry's sizes
and CRC in a data descriptor after the entry instead of going back to patch the header, so the
archive can be sent while it is being written. Weights (`.safetensors`) are stored, not deflated:
float tensors shrink by a few percent at most, and deflating gigabytes would tie up the API's CPU.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20
_STORED_SUFFIXES = {".safetensors", ".bin", ".pt", ".gguf"}


class _Buffer(io.RawIOBase):
    """A write-only, non-seekable sink whose contents are taken out after every write."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def stream_zip(base: Path, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """The files under `base` as a zip archive (paths relative to `base`), yielded in chunks of
    about `chunk_size` bytes."""
    sink = _Buffer()
    with zipfile.ZipFile(sink, "w") as archive:
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo.from_file(path, path.relative_to(base).as_posix())
            info.compress_type = zipfile.ZIP_STORED if path.suffix in _STORED_SUFFIXES else zipfile.ZIP_DEFLATED
            with path.open("rb") as src, archive.open(info, "w") as dst:
                while block := src.read(chunk_size):
                    dst.write(block)
                    if data := sink.take():
                        yield data
            if data := sink.take():
                yield data
    yield sink.take()  # the central directory
