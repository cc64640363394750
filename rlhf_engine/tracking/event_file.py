"""TensorBoard's event-file format, written (and read back) by hand.

`tensorboard --logdir DIR` (or any reader of the format) opens what this writes. The format is
written by hand, so neither tensorboard nor protobuf is a dependency: an event file is a
sequence of TFRecords

    uint64 length | uint32 masked_crc32c(length) | length bytes of an `Event` proto | uint32 masked_crc32c(data)

where Event is {1: wall_time (double), 2: step (int64), 3: file_version (string),
5: summary {1: value {1: tag (string), 2: simple_value (float)}}, 7: session_log {1: status}}.
Text (the samples of an evaluation) is a value with {8: tensor {1: dtype DT_STRING, 8: string_val}}
and {9: metadata {1: plugin_data {1: plugin_name "text"}}}, which TensorBoard's Text tab reads as
Markdown.

Each writer opens a new file; when a run resumes from a checkpoint it first writes a
SessionLog START at the resumed step, which tells TensorBoard to drop the steps at and after it
that the interrupted run had logged, so curves never show a step twice (the reporter wrapper,
rlhf_engine/tracking/reporter.py, decides when). Pure Python; no torch.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

# ---- CRC-32C (Castagnoli), table driven ---------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---- protobuf, the few wire types we need --------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 negatives as two's complement, like protobuf
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int | None = None, *, file_version: str | None = None,
           summary: bytes | None = None, session_status: int | None = None) -> bytes:
    out = bytearray(b"\x09" + struct.pack("<d", wall_time))  # field 1, fixed64
    if step:
        out += b"\x10" + _varint(int(step))  # field 2, varint
    if file_version is not None:
        out += _field_bytes(3, file_version.encode())
    if summary is not None:
        out += _field_bytes(5, summary)
    if session_status is not None:
        out += _field_bytes(7, b"\x08" + _varint(session_status))  # session_log {status}
    return bytes(out)


def _scalar_summary(values: dict[str, float]) -> bytes:
    out = bytearray()
    for tag, value in values.items():
        body = _field_bytes(1, tag.encode()) + b"\x15" + struct.pack("<f", value)  # tag, simple_value
        out += _field_bytes(1, body)
    return bytes(out)


DT_STRING = 7  # tensorflow's DataType enum
_TEXT_PLUGIN = _field_bytes(1, _field_bytes(1, b"text"))  # metadata {plugin_data {plugin_name}}


def _text_summary(texts: dict[str, str]) -> bytes:
    out = bytearray()
    for tag, text in texts.items():
        tensor = b"\x08" + _varint(DT_STRING) + _field_bytes(8, text.encode())  # dtype, string_val
        out += _field_bytes(1, _field_bytes(1, tag.encode()) + _field_bytes(8, tensor) + _field_bytes(9, _TEXT_PLUGIN))
    return bytes(out)


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


SESSION_START = 1


class EventFileWriter:
    """One `events.out.tfevents.*` file, appended record by record and flushed after each write."""

    _counter = 0

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        EventFileWriter._counter += 1
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname() or 'localhost'}"
                f".{os.getpid()}.{EventFileWriter._counter}")
        self.path = self.logdir / name
        self._file = open(self.path, "ab")
        self._write(_event(time.time(), file_version="brain.Event:2"))

    def _write(self, event: bytes) -> None:
        self._file.write(_record(event))
        self._file.flush()

    def add_scalars(self, step: int, values: dict[str, float], wall_time: float | None = None) -> None:
        clean = {k: float(v) for k, v in values.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        if clean:
            self._write(_event(wall_time or time.time(), step, summary=_scalar_summary(clean)))

    def add_texts(self, step: int, texts: dict[str, str], wall_time: float | None = None) -> None:
        """Markdown texts by tag at `step` (TensorBoard's Text tab)."""
        if texts:
            self._write(_event(wall_time or time.time(), step, summary=_text_summary(texts)))

    def session_start(self, step: int) -> None:
        """Tell readers that a (resumed) run starts at `step`: earlier-logged steps >= it are stale."""
        self._write(_event(time.time(), step, session_status=SESSION_START))

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Parse an event file written here, checking every CRC (tests, debugging). Returns dicts with
    wall_time, step and, when present, file_version, scalars {tag: value}, texts {tag: text} and
    session_status."""
    data = Path(path).read_bytes()
    events, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8:pos + 12])[0] != masked_crc32c(header):
            raise ValueError(f"bad length CRC at byte {pos}")
        body = data[pos + 12:pos + 12 + length]
        if struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])[0] != masked_crc32c(body):
            raise ValueError(f"bad data CRC at byte {pos}")
        events.append(_parse_event(body))
        pos += 16 + length
    return events


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = _read_varint(buf, i)
            value, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _parse_event(body: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"step": 0}
    for number, value in _fields(body):
        if number == 1:
            out["wall_time"] = struct.unpack("<d", value)[0]
        elif number == 2:
            out["step"] = value
        elif number == 3:
            out["file_version"] = value.decode()
        elif number == 5:
            for _, v in _fields(value):
                tag, simple, text = None, None, None
                for n, x in _fields(v):
                    if n == 1:
                        tag = x.decode()
                    elif n == 2:
                        simple = struct.unpack("<f", x)[0]
                    elif n == 8:
                        text = b"".join(s for k, s in _fields(x) if k == 8).decode()
                if tag is not None and simple is not None:
                    out.setdefault("scalars", {})[tag] = simple
                if tag is not None and text is not None:
                    out.setdefault("texts", {})[tag] = text
        elif number == 7:
            out["session_status"] = dict(_fields(value)).get(1, 0)
    return out
