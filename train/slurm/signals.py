"""Signals that end a job, caught as early as possible and only recorded (see vislab.train.slurm.preemption).

No torch here: `signals_caught()` is entered first thing in `vislab fit`, before the slow imports, so a signal that
arrives while a job starts up is acted on at the first training step instead of killing the task.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from vislab.core.dist import is_rank_zero

HANDLED = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class _Signals:
    """The process-wide record of a pending stop request (signal handlers can only set a flag)."""

    def __init__(self) -> None:
        self.received = 0
        self.interrupts = 0
        self.active = False
        self.ignore_usr1 = False
        self.previous: dict[int, Any] = {}

    def handler(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGUSR1 and self.ignore_usr1:
            # Slurm's time-limit warning after training ended and was checkpointed: the test pass goes on (a
            # half-done test cannot be saved; a SIGTERM still ends it, and `vislab fit RUN_DIR` runs it again)
            return
        if not self.active:  # outside training: behave as before vislab took over
            self._forward(signum, frame)
            return
        if signum == signal.SIGINT:
            # Ctrl-C: like SIGTERM (checkpoint at the next step, exit 3); a second one stops at once. The terminal
            # sends it to every process of the job: rank 0 speaks. os.write: print is not safe in a handler.
            # The next Ctrl-C is the kernel's default (the process ends at once, even inside a long C call where
            # no Python handler could run).
            self.interrupts += 1
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if is_rank_zero():
                os.write(2, b"[vislab] Ctrl-C: writing a checkpoint at the next step, then exiting "
                            b"(Ctrl-C again aborts at once, without a checkpoint)\n")
        self.received = max(self.received, int(signum))  # SIGTERM (15) wins over SIGUSR1 (10): no requeue

    def _forward(self, signum: int, frame: Any) -> None:
        prev = self.previous.get(signum, signal.SIG_DFL)
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def install(self) -> None:
        """Take over SIGUSR1, SIGTERM and SIGINT (again: Lightning re-registers SIGTERM when fit starts)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in HANDLED:
            if sig == signal.SIGINT and self.interrupts:
                continue  # after a first Ctrl-C, the second one aborts (see `handler`)
            current = signal.getsignal(sig)
            if current != self.handler and sig not in self.previous:
                self.previous[sig] = current
            signal.signal(sig, self.handler)
        self.active = True
        self.ignore_usr1 = False

    def training_ended(self, under_slurm: bool) -> None:
        """Training is over and its checkpoint written: nothing is left to save at a step. Ctrl-C and SIGTERM
        act as without vislab again; under Slurm, SIGUSR1 (time limit soon) is ignored."""
        self.active = False
        self.ignore_usr1 = under_slurm

    def release(self) -> None:
        self.active = False
        self.ignore_usr1 = False
        if threading.current_thread() is threading.main_thread():
            for sig, prev in self.previous.items():
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self.previous.clear()


SIGNALS = _Signals()


@contextlib.contextmanager
def signals_caught() -> Iterator[None]:
    """Around the whole `fit` command, entered first thing: a signal while the run starts up is acted on at the
    first step, one during the test pass has its meaning too (see `training_ended`); restored at the end."""
    SIGNALS.received = 0
    SIGNALS.interrupts = 0
    SIGNALS.install()
    try:
        yield
    finally:
        SIGNALS.release()


def slurm_job_id() -> str | None:
    """The id `scontrol requeue` takes (array tasks as <array job>_<task>), or None outside a batch job."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID")
    return job if job and re.fullmatch(r"[0-9_]+", job) else None


def requeue(job_id: str) -> bool:
    """`scontrol requeue JOB`: Slurm ends this job (SIGTERM to all its processes) and queues it again."""
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"[vislab] scontrol requeue {job_id} failed: {e}", file=sys.stderr, flush=True)
        return False
    if result.returncode != 0:
        print(f"[vislab] scontrol requeue {job_id} failed: {result.stderr.strip()}", file=sys.stderr, flush=True)
    return result.returncode == 0
