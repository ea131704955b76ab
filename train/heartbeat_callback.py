"""The Lightning callback that keeps `<run_dir>/heartbeat.json` fresh (format and reader: `heartbeat.py`)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from vislab.train.heartbeat import read_heartbeat, write_heartbeat
from vislab.train.slurm.preemption import EXIT_PREEMPTED


class Heartbeat(Callback):
    """Rank 0 keeps `heartbeat.json` fresh: pid, host, time, step, epoch, status (and the error, if any)."""

    def __init__(self, run_dir: Path, every_s: float = 30.0):
        self.run_dir = Path(run_dir)
        self.every_s = every_s
        self._last = 0.0
        old = read_heartbeat(Path(run_dir))
        # wall time counts from the first start of the run (resumes and requeues add to it)
        self.first_start = float(old.get("first_start", time.time()))
        self.start = time.time()

    def write(self, trainer: pl.Trainer, status: str, **extra: Any) -> None:
        if trainer.global_rank != 0:
            return
        self._last = time.time()
        beat = {"status": status, "pid": os.getpid(), "host": socket.gethostname(), "time": self._last,
                "start": self.start, "first_start": self.first_start, "every_s": self.every_s,
                "step": trainer.global_step, "epoch": trainer.current_epoch,
                "slurm_job_id": os.environ.get("SLURM_JOB_ID"), **extra}
        write_heartbeat(self.run_dir, beat)

    def _tick(self, trainer: pl.Trainer) -> None:
        if time.time() - self._last >= self.every_s:
            self.write(trainer, "running")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer, "running")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._tick(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._tick(trainer)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._tick(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.write(trainer, "running")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer, "running")  # the test of the best checkpoint follows; summary.json ends the run

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SystemExit) and exception.code == EXIT_PREEMPTED:
            self.write(trainer, "preempted", exit_code=EXIT_PREEMPTED)
        elif isinstance(exception, KeyboardInterrupt):
            self.write(trainer, "failed", error="interrupted (Ctrl-C)")
        else:
            first = (str(exception).splitlines() or [""])[0][:300]
            self.write(trainer, "failed", error=f"{type(exception).__name__}: {first}")
