"""TensorBoard event files written by hand (rlhf_engine/tracking/event_file.py, reporter.py): the CRC, the records, the
resume marker, and the Reporter wrapper. Read back with TensorBoard itself when it is installed."""

from __future__ import annotations

import importlib.util

import pytest

from rlhf_engine.callbacks import NullReporter
from rlhf_engine.tracking.event_file import crc32c, read_events
from rlhf_engine.tracking.reporter import TensorBoardReporter


class Recorder(NullReporter):
    def __init__(self):
        self.calls, self.stop_reason, self.last_step = [], "cancelled", 7

    def metrics(self, step, values, *, total_steps=None):
        self.calls.append((step, values, total_steps))


def test_crc32c_known_answer():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0


def test_scalars_round_trip_and_resume_marker(tmp_path):
    inner = Recorder()
    reporter = TensorBoardReporter(inner, tmp_path / "tb")
    for step in (1, 2, 3):
        reporter.metrics(step, {"loss": 1.0 / step, "rewards/margins": step * 0.5, "bad": float("nan")}, total_steps=3)
    reporter.metrics(3, {"eval/loss": 0.25})
    reporter.close()
    assert [c[0] for c in inner.calls] == [1, 2, 3, 3] and inner.calls[0][2] == 3  # forwarded unchanged
    assert reporter.stop_reason == "cancelled" and reporter.last_step == 7  # read through to the inner one

    (first,) = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    events = read_events(first)  # checks every CRC
    assert events[0]["file_version"] == "brain.Event:2"
    scalars = [(e["step"], e["scalars"]) for e in events if "scalars" in e]
    assert [s for s, _ in scalars] == [1, 2, 3, 3]
    assert scalars[1][1] == {"train/loss": 0.5, "train/rewards/margins": 1.0}  # NaN dropped
    assert scalars[3][1] == {"eval/loss": 0.25}

    resumed = TensorBoardReporter(NullReporter(), tmp_path / "tb")  # a new process after a crash
    resumed.metrics(3, {"loss": 9.0})
    resumed.close()
    (second,) = set((tmp_path / "tb").glob("events.out.tfevents.*")) - {first}
    marker = read_events(second)[1]
    assert marker["session_status"] == 1 and marker["step"] == 3  # SessionLog START at the resumed step


def test_a_failing_tracker_never_stops_training(tmp_path):
    class Broken:
        closed = False

        def log(self, step, values):
            raise RuntimeError("tracker down")

        def close(self):
            Broken.closed = True

    reporter = TensorBoardReporter(Recorder(), tmp_path, trackers=[Broken()])
    reporter.metrics(1, {"loss": 1.0})
    reporter.close()
    assert Broken.closed


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed (optional)")
def test_tensorboard_reads_the_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = TensorBoardReporter(NullReporter(), tmp_path)
    for step in range(1, 6):
        first.metrics(step, {"loss": float(step)})
    first.close()
    second = TensorBoardReporter(NullReporter(), tmp_path)  # resumed from step 4: 4 and 5 replayed
    for step in range(4, 7):
        second.metrics(step, {"loss": 10.0 + step})
    second.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 1), (2, 2), (3, 3), (4, 14), (5, 15), (6, 16)]
