"""One job on N processes of this worker's machine (RLHF_TRAIN_PROCESSES): the job's child runs
the engine under PyTorch's elastic launcher, torchrun (`python -m torch.distributed.run`), one
rank per device.

    worker child (lease, heartbeat)  --torchrun-->  rank 0 .. rank N-1  (python -m worker.ranks ENTRY)
                                                    rank 0: the job's reporter (DbReporter)

torchrun, not the launcher's Python API: a Celery pool child is a daemonic process, which
multiprocessing forbids to have children, while a subprocess it may start. The launcher is
PyTorch's, not ours: it starts the ranks with RANK/WORLD_SIZE/LOCAL_RANK set (the engine then
joins them: rlhf_engine/distributed.py) and, when one rank dies, tears the others down and exits
non-zero, so no rank is left hanging in a collective. torchrun gets SIGTERM should the job's
child die first (PR_SET_PDEATHSIG), so a killed child leaves no ranks training behind it. The
child keeps its lease heartbeat running meanwhile.

How a launch ends, for worker/tasks.py:
  - rank 0's return value of ENTRY (the RunResult and the reporter's stop reason), once rank 0
    has written it, even should a rank die in the teardown after it (the outputs are stored);
  - the exception a rank raised (recorded by the rank, re-raised here), so a job's own error (a
    bad file, a bug) gets its verdict as with one process;
  - RanksLost when a rank ended without raising (killed by a signal, the OOM killer) or raised
    only because a peer was gone (a collective failing): the attempt ends without a verdict and
    the job resumes from its checkpoint (the reaper, bounded by RLHF_MAX_ATTEMPTS).
Arguments, results and exceptions travel as pickles between the processes of this one job,
through a directory only they know, as multiprocessing's own do.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from worker.reporter import SHUTDOWN

ARGS, RESULT, STOP = "args.pickle", "result.pickle", "shutdown"
log = logging.getLogger(__name__)


class RanksLost(BaseException):
    """A rank of the job ended without an error of the job's own: no verdict (like a killed
    worker), so not an Exception that the job's error handling would turn into `failed`."""


def launch(processes: int, entry: str, args: tuple):
    """Rank 0's return value of `entry(*args)` ("module:function") run on `processes` local ranks."""
    work = Path(tempfile.mkdtemp(prefix="rlhf-ranks-"))
    try:
        (work / ARGS).write_bytes(pickle.dumps(args))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "--max-restarts=0", "--monitor-interval=0.5", "-m", "worker.ranks", entry, str(work)]
        proc = subprocess.Popen(command, preexec_fn=_die_with_parent)
        while proc.poll() is None:  # a warm shutdown of the worker reaches rank 0's reporter as a file
            if SHUTDOWN.is_set() and not (work / STOP).exists():
                (work / STOP).touch()
            time.sleep(0.2)
        code = proc.returncode
        if (work / RESULT).exists():  # rank 0 returned: the job's work is done and stored, whatever
            if code != 0:             # a peer did in the teardown after it
                log.warning("rank 0 returned, but torchrun exited with code %s in the teardown", code)
            return pickle.loads((work / RESULT).read_bytes())
        recorded = sorted(work.glob("error-*.pickle"))
        if recorded:
            raise pickle.loads(recorded[0].read_bytes())
        raise RanksLost(f"a rank of {processes} ended without an error of its own (torchrun exit code {code}); "
                        "the others were stopped")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _die_with_parent() -> None:
    """In torchrun, before it starts: SIGTERM when the job's child dies (Linux), which torchrun
    passes on to its ranks."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _record_error(err: BaseException, work: Path) -> None:
    """The job's own errors are kept for `launch`; a collective that failed because a peer is
    gone is not (the peer's loss is what ended the attempt)."""
    if _peer_gone(err) or not isinstance(err, Exception):
        return
    try:
        data = pickle.dumps(err)
    except Exception:
        data = pickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))
    (work / f"error-{int(os.environ.get('RANK', 0)):05d}.pickle").write_bytes(data)


def _peer_gone(err: BaseException) -> bool:
    """Whether `err` is a collective failing, which is what a rank sees when a peer dies: NCCL
    raises DistError; gloo a RuntimeError from its transport, raised inside torch.distributed or,
    for DDP's gradient all-reduce, from backward (then only its message says where it came from)."""
    import traceback

    import torch.distributed as dist

    if isinstance(err, dist.DistError) or "gloo" in str(err):
        return True
    return any("torch/distributed/" in frame.filename or "torch/nn/parallel/" in frame.filename
               for frame in traceback.extract_tb(err.__traceback__))


def _relay_shutdown(work: Path) -> None:
    """In each rank: the worker's SHUTDOWN once the child has written the file, so rank 0's
    DbReporter stops at the next step with a checkpoint and the job is handed back, as with one
    process (the engine broadcasts rank 0's decision to the others)."""
    while not (work / STOP).exists():
        time.sleep(0.2)
    SHUTDOWN.set()


def main(entry: str, work: str) -> None:
    """One rank, as torchrun starts it: `entry(*args)`; rank 0 writes its return value."""
    module, name = entry.split(":")
    function = getattr(importlib.import_module(module), name)
    work_dir = Path(work)
    threading.Thread(target=_relay_shutdown, args=(work_dir,), daemon=True).start()
    try:
        result = function(*pickle.loads((work_dir / ARGS).read_bytes()))
    except BaseException as err:
        _record_error(err, work_dir)
        raise
    if os.environ.get("RANK") == "0":
        tmp = work_dir / (RESULT + ".tmp")
        tmp.write_bytes(pickle.dumps(result))
        tmp.replace(work_dir / RESULT)


if __name__ == "__main__":
    main(*sys.argv[1:3])
