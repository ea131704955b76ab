"""Stopping cleanly when the cluster says so: checkpoint at a step boundary, requeue, exit.

Slurm announces the end of a job with a signal to every task:
  SIGUSR1  `#SBATCH --signal=SIGUSR1@90` (time limit in 90 s) or `scancel --signal=USR1`:
           checkpoint, `scontrol requeue` the job, exit; the requeued job resumes from the checkpoint.
  SIGTERM  `scancel`, `scontrol requeue`, preemption with a grace time, the time limit itself:
           checkpoint quickly and exit (Slurm decides whether the job comes back); SIGKILL follows
           after KillWait / GraceTime, so this must be fast. (A task may get SIGTERM twice, from
           slurmstepd and forwarded by srun: repeats are ignored; SIGKILL still stops at once.)
  SIGINT   Ctrl-C (the terminal sends it to every rank): as SIGTERM; a second Ctrl-C ends the process at once (no checkpoint).

The signal handler only records the signal. The ranks act together at the next optimizer-step boundary:
one all-reduce (MAX of the signal numbers, on a gloo group so a GPU run does not synchronise its stream)
tells every rank, all ranks write the checkpoint (`trainer.save_checkpoint` has a barrier), rank 0
requeues, and all exit with EXIT_PREEMPTED. Lightning's own Slurm handler checkpoints inside the signal
handler, which can interleave with the DDP collective of the step in progress; it is switched off
(`SLURMEnvironment(auto_requeue=False)`, see vislab.train.trainer).

A signal that comes after the last training step (during the final validation) stops the run the same way
before its test pass; one during the test pass ends it as without vislab (SIGTERM, Ctrl-C) or is ignored
(Slurm's SIGUSR1: the test goes on), since a half-done test cannot be checkpointed.

Checkpoints are `hpc_ckpt_<n>.ckpt` in the run directory (Lightning's name), written atomically (temp file
+ rename); the two newest are kept, so a corrupt newest one still leaves one to fall back on.
"""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger

from vislab.train.slurm import restarts
from vislab.train.slurm.signals import SIGNALS, requeue, slurm_job_id

EXIT_PREEMPTED = 3
"""Exit code of a process that stopped at a signal after writing its checkpoint."""
KEEP_HPC_CHECKPOINTS = 2
STOPPED_WANDB = (signal.SIGTERM, signal.SIGINT)
"""Signals that reach wandb's service process too (Slurm's SIGTERM, the terminal's Ctrl-C): it stops at once."""


class Preempted(SystemExit):
    """Raised on every rank after the checkpoint is written; leaves `vislab fit` with EXIT_PREEMPTED."""

    def __init__(self) -> None:
        super().__init__(EXIT_PREEMPTED)


def next_hpc_path(run_dir: Path) -> Path:
    numbers = [int(m[1]) for p in run_dir.glob("hpc_ckpt_*.ckpt") if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))]
    return run_dir / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


def prune_hpc_checkpoints(run_dir: Path, keep: int = KEEP_HPC_CHECKPOINTS) -> None:
    found = sorted(run_dir.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    for old in found[:-keep]:
        old.unlink(missing_ok=True)


class Preemption(Callback):
    """Act on SIGUSR1 / SIGTERM at the next optimizer step (see module docstring)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._group: Any = None
        self._first_step_logged = False
        self._under_slurm = slurm_job_id() is not None
        SIGNALS.install()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._group is None and dist.is_available() and dist.is_initialized() and dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")  # the stop vote stays off the NCCL stream

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        SIGNALS.install()  # Lightning registered its SIGTERM handler after `setup`
        if trainer.is_global_zero and self._under_slurm:
            restarts.record_step(self.run_dir, trainer.global_step, train_start_time=time.time())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._first_step_logged and trainer.is_global_zero and self._under_slurm:
            restarts.update_last(self.run_dir, first_step_time=time.time())
            self._first_step_logged = True
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-accumulation: the partial gradient is not in a checkpoint
        received = self._vote(trainer)
        if received:
            self._stop(trainer, signal.Signals(received))

    def _vote(self, trainer: pl.Trainer) -> int:
        """The largest signal number any rank received (0 = none), known to every rank."""
        if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return SIGNALS.received
        flag = torch.tensor([SIGNALS.received], dtype=torch.int32)  # CPU tensor: gloo
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag.item())

    def _stop(self, trainer: pl.Trainer, received: signal.Signals) -> None:
        path = Path(str(trainer.strategy.broadcast(str(next_hpc_path(self.run_dir)) if trainer.is_global_zero else None)))
        t0 = time.perf_counter()
        trainer.save_checkpoint(path, weights_only=False)  # every rank: it ends in a barrier; full state
        seconds = time.perf_counter() - t0
        if trainer.is_global_zero:
            self._after_save(trainer, received, path, seconds)
        raise Preempted()

    def _after_save(self, trainer: pl.Trainer, received: signal.Signals, path: Path, seconds: float) -> None:
        prune_hpc_checkpoints(self.run_dir)
        print(f"[vislab] {received.name} at step {trainer.global_step}: checkpoint {path} written in {seconds:.2f} s",
              file=sys.stderr, flush=True)
        if self._under_slurm:
            restarts.update_last(self.run_dir, stop_signal=received.name, stop_step=trainer.global_step,
                                 checkpoint_seconds=round(seconds, 3))
        for logger in trainer.loggers:
            logger.finalize("preempted")
        _finish_wandb(received)
        job = slurm_job_id()
        if received == signal.SIGUSR1 and job is not None:
            print(f"[vislab] requeueing job {job}", file=sys.stderr, flush=True)
            requeue(job)  # Slurm now sends SIGTERM to this job: already stopping, it only sets the flag

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A signal after the last step (in the final validation) is not dropped: checkpoint and stop before the
        test pass, which the restart runs. Then nothing is left to save at a step (`SIGNALS.training_ended`).
        (The handlers are restored when the command ends: `signals_caught`.)"""
        received = self._vote(trainer)
        if received:
            self._stop(trainer, signal.Signals(received))
        SIGNALS.training_ended(self._under_slurm)


class TerminationSafeWandbLogger(WandbLogger):
    """A WandbLogger that goes quiet once the process got SIGTERM.

    Slurm sends SIGTERM to every process of the job, wandb's service process included, which exits at once
    (keeping what it flushed to the .wandb file, see vislab.train.tracking). A later wandb call would raise
    ConnectionResetError and fail the step before the checkpoint is written; these calls are dropped instead.
    It is the one WandbLogger vislab builds, so it also drops Lightning's arguments that wandb deprecates.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Lightning always passes anonymous=None, which wandb (0.31 here) answers with a deprecation warning
        self._wandb_init.pop("anonymous", None)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if SIGNALS.received not in STOPPED_WANDB:
            super().log_metrics(metrics, step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        if SIGNALS.received not in STOPPED_WANDB:
            super().log_hyperparams(params, *args, **kwargs)


def _finish_wandb(received: signal.Signals) -> None:
    """Close the wandb run as 'preempting', so that the restarted job continues it (same id)."""
    if "wandb" not in sys.modules:
        return
    import wandb  # wandb: slow to import, only when tracking

    if wandb.run is None:
        return
    try:
        if received == signal.SIGUSR1:
            wandb.run.mark_preempting()
        wandb.finish()
    except Exception as e:  # after SIGTERM Slurm has stopped wandb's service too; what it flushed is on disk
        print(f"[vislab] wandb's service already stopped ({type(e).__name__}); the restart continues the run",
              file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            wandb.teardown()  # else the same failure again, as a traceback at interpreter exit
