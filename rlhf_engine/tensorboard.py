"""Metrics to TensorBoard event files, and optionally to W&B or MLflow, around any Reporter.

    reporter = TensorBoardReporter(DbReporter(...), logdir=job_dir / "tensorboard",
                                   trackers=trackers_from_env(run_name=job_id, config=method))
    ...
    reporter.close()

`tensorboard --logdir DIR` (or any reader of the format) opens what this writes. The format is
written by hand, so neither tensorboard nor protobuf is a dependency: an event file is a
sequence of TFRecords

    uint64 length | uint32 masked_crc32c(length) | length bytes of an `Event` proto | uint32 masked_crc32c(data)

where Event is {1: wall_time (double), 2: step (int64), 3: file_version (string),
5: summary {1: value {1: tag (string), 2: simple_value (float)}}, 7: session_log {1: status}}.

Each writer opens a new file; when a run resumes from a checkpoint it first writes a
SessionLog START at the resumed step, which tells TensorBoard to drop the steps at and after it
that the interrupted run had logged, so curves never show a step twice.

Everything here is best effort: a full disk or a tracker that is down is logged and ignored,
never allowed to fail a training run. Pure Python; no torch.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

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

    def session_start(self, step: int) -> None:
        """Tell readers that a (resumed) run starts at `step`: earlier-logged steps >= it are stale."""
        self._write(_event(time.time(), step, session_status=SESSION_START))

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Parse an event file written here, checking every CRC (tests, debugging). Returns dicts with
    wall_time, step and, when present, file_version, scalars {tag: value} and session_status."""
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
            scalars = out.setdefault("scalars", {})
            for _, v in _fields(value):
                tag, simple = None, None
                for n, x in _fields(v):
                    if n == 1:
                        tag = x.decode()
                    elif n == 2:
                        simple = struct.unpack("<f", x)[0]
                if tag is not None and simple is not None:
                    scalars[tag] = simple
        elif number == 7:
            out["session_status"] = dict(_fields(value)).get(1, 0)
    return out


# ---- external trackers (optional) ----------------------------------------------------------------


class Tracker(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class WandbTracker:
    def __init__(self, project: str, run_name: str | None, config: dict | None, *, entity: str | None = None,
                 tags: list[str] | None = None, display_name: str | None = None):
        import wandb  # optional; only when configured

        self._wandb = wandb
        # The run id stays the job's (a resumed job continues its run); `display_name` is what W&B shows.
        self._run = wandb.init(project=project, name=display_name or run_name, id=run_name, resume="allow",
                               config=config or {}, entity=entity, tags=tags, reinit=True)

    def log(self, step: int, values: dict[str, float]) -> None:
        self._run.log(values, step=step)

    def close(self) -> None:
        self._run.finish()


class MlflowTracker:
    def __init__(self, experiment: str | None, run_name: str | None, config: dict | None):
        import mlflow  # optional; only when configured

        self._mlflow = mlflow
        if experiment:
            mlflow.set_experiment(experiment)
        self._run = mlflow.start_run(run_name=run_name)
        if config:
            mlflow.log_params(_flatten(config))

    def log(self, step: int, values: dict[str, float]) -> None:
        self._mlflow.log_metrics(values, step=step, run_id=self._run.info.run_id)

    def close(self) -> None:
        self._mlflow.end_run()


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def trackers_from_env(run_name: str | None = None, config: dict | None = None,
                      env: dict[str, str] | None = None) -> list[Tracker]:
    """W&B when WANDB_PROJECT is set and `wandb` is installed; MLflow when MLFLOW_TRACKING_URI is
    set and `mlflow` is installed (experiment from MLFLOW_EXPERIMENT_NAME). Neither is a
    dependency. A tracker that fails to start is logged and skipped."""
    env = os.environ if env is None else env
    found: list[Tracker] = []
    if env.get("WANDB_PROJECT") and _importable("wandb"):
        try:
            found.append(WandbTracker(env["WANDB_PROJECT"], run_name, config))
        except Exception:
            log.exception("could not start the W&B run; continuing without it")
    if env.get("MLFLOW_TRACKING_URI") and _importable("mlflow"):
        try:
            found.append(MlflowTracker(env.get("MLFLOW_EXPERIMENT_NAME"), run_name, config))
        except Exception:
            log.exception("could not start the MLflow run; continuing without it")
    return found


def _wandb_credentials(env: dict[str, str]) -> bool:
    """An API key in the environment, an offline/disabled mode, or a `wandb login` in ~/.netrc."""
    if env.get("WANDB_API_KEY") or env.get("WANDB_MODE") in ("offline", "disabled"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_tracker(settings: dict, run_name: str | None = None, config: dict | None = None,
                  env: dict[str, str] | None = None) -> tuple[Tracker | None, str | None]:
    """A W&B run for a job's OpenAI-style integration (`project`, `name`, `entity`, `tags`), or
    (None, why not): no `wandb` package, no credentials, or a run that would not start."""
    env = os.environ if env is None else env
    if not _importable("wandb"):
        return None, "the `wandb` package is not installed on the worker"
    if not _wandb_credentials(env):
        return None, "the worker has no W&B credentials (WANDB_API_KEY or `wandb login`)"
    try:
        return WandbTracker(settings["project"], run_name, config, entity=settings.get("entity"),
                            tags=settings.get("tags"), display_name=settings.get("name")), None
    except Exception as err:
        log.exception("could not start the W&B run")
        return None, f"the W&B run could not start ({type(err).__name__})"


# ---- the Reporter wrapper ------------------------------------------------------------------------


class TensorBoardReporter:
    """A Reporter that forwards everything to `inner` and also writes every metrics call as
    TensorBoard scalars under `logdir` (train keys as `train/<key>`, `eval/...` keys as they are),
    plus to any `trackers`. Attributes it does not have are read from `inner` (the worker reads
    `stop_reason` and `last_step` of its DbReporter through it)."""

    def __init__(self, inner, logdir: str | Path, trackers: list[Tracker] | None = None):
        self.inner = inner
        self.logdir = Path(logdir)
        self.trackers = list(trackers or [])
        self._writer: EventFileWriter | None = None
        self._failed = False

    def __getattr__(self, name: str):
        if name == "inner":  # not set yet (unpickling, copying): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _file(self, first_step: int) -> EventFileWriter | None:
        if self._writer is None and not self._failed:
            try:
                resumed = self.logdir.is_dir() and any(self.logdir.glob("events.out.tfevents.*"))
                self._writer = EventFileWriter(self.logdir)
                if resumed:
                    self._writer.session_start(first_step)
            except OSError:
                self._failed = True
                log.exception("cannot write TensorBoard events under %s; continuing without them", self.logdir)
        return self._writer

    def event(self, message: str, *, level: str = "info", data: dict | None = None) -> None:
        self.inner.event(message, level=level, data=data)

    def metrics(self, step: int, values: dict[str, float], *, total_steps: int | None = None) -> None:
        self.inner.metrics(step, values, total_steps=total_steps)
        scalars = {k if k.startswith("eval/") else f"train/{k}": v for k, v in values.items()}
        writer = self._file(step)
        if writer is not None:
            try:
                writer.add_scalars(step, scalars)
            except (OSError, ValueError):
                log.exception("could not write TensorBoard scalars at step %s", step)
        numbers = {k: float(v) for k, v in scalars.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        for tracker in self.trackers:
            try:
                tracker.log(step, numbers)
            except Exception:
                log.exception("tracker %s failed at step %s; continuing", type(tracker).__name__, step)

    def checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self.inner.checkpoint(step, path, metrics)

    def should_stop(self) -> bool:
        return self.inner.should_stop()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception:
                log.exception("could not close tracker %s", type(tracker).__name__)
        self.trackers = []
