"""The Lightning Trainer built from `trainer:`, with the callbacks every run gets.

Checkpoints: `last.ckpt` + best-k by the family's monitored metric, written atomically beside their target
(`AtomicCheckpointIO`: Lightning's own writer stages them in /tmp and copies, which a full disk truncates).
A non-finite loss stops all ranks at the same step, before that step is checkpointed, so the last good
checkpoint survives.
"""

from __future__ import annotations

import io
import logging
import math
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from pytorch_lightning.loggers import CSVLogger, Logger

from vislab.core.checkpoints import newest_good_checkpoint, save_atomic
from vislab.core.config import RunConfig
from vislab.core.errors import DiskFullError, NonFiniteLossError
from vislab.train.families import monitor_of


class StopOnNonFiniteLoss(Callback):
    """All ranks agree on whether any rank saw a NaN/Inf loss, and then all stop together."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bad = loss is not None and not bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            raise NonFiniteLossError(
                f"training stopped: the loss became {'NaN/Inf'} at step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}, batch {batch_idx}); last good checkpoint: "
                f"{last if last.exists() else 'none yet'} (try a lower optim.lr or trainer.gradient_clip_val)"
            )


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into memory, then `save_atomic`: temp file beside the target, fsync, rename. On a full disk
    one DiskFullError names the file, the free space and the last good checkpoint, which is intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            save_atomic(Path(path), buffer.getbuffer())
        except DiskFullError as e:
            folder = Path(path).parent
            good = newest_good_checkpoint(sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True))
            raise DiskFullError(f"{e}; last good checkpoint: {good or 'none yet'}") from e.__cause__


class StreamPosition(Callback):
    """Tells the training loader how many batches of this epoch are done (saved in checkpoints)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        combined = trainer.fit_loop._combined_loader
        loader = combined.flattened[0] if combined is not None else None
        if loader is not None and hasattr(loader, "mark_consumed"):
            loader.mark_consumed(batch_idx + 1)


class TextProgress(Callback):
    """One plain line every `log_every_n_steps` steps: readable in Slurm logs, unlike a tqdm bar."""

    def __init__(self, every: int):
        self.every = max(1, every)
        self.t0 = time.time()
        self.step0 = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.t0, self.step0 = time.time(), trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_rank != 0 or (batch_idx + 1) % self.every:
            return
        m = trainer.callback_metrics
        rate = (trainer.global_step - self.step0) / max(1e-9, time.time() - self.t0)
        loss = m.get("train/loss")
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        print(f"epoch {trainer.current_epoch} batch {batch_idx + 1}/{trainer.num_training_batches} "
              f"step {trainer.global_step} loss {float(loss) if loss is not None else math.nan:.4f} "
              f"lr {lr:.3g} {rate:.2f} steps/s", file=sys.stderr, flush=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == 0 and not trainer.sanity_checking:
            vals = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            print(f"epoch {trainer.current_epoch} " + " ".join(f"{k} {v:.4f}" for k, v in sorted(vals.items())),
                  file=sys.stderr, flush=True)


def _strategy(cfg: RunConfig) -> Any:
    from pytorch_lightning.strategies import DDPStrategy  # Lightning: kept off the CLI's start-up path

    t = cfg.trainer
    if cfg.world_size == 1 and t.strategy == "auto":
        return "auto"
    return DDPStrategy(
        start_method="spawn" if t.strategy == "ddp_spawn" else "popen",
        timeout=timedelta(seconds=t.ddp_timeout_s),
        gradient_as_bucket_view=True,
    )


def _progress(cfg: RunConfig) -> tuple[bool, list[Callback]]:
    mode = cfg.trainer.progress_bar
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "text"
    if mode == "bar":
        return True, [TQDMProgressBar()]
    if mode == "text":
        return False, [TextProgress(cfg.trainer.log_every_n_steps)]
    return False, []


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_lightning() -> None:
    """Silence advice that does not apply to vislab runs (it buries the lines users need in Slurm logs)."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropTips())
    for pattern in (
        r".*overridden `on_after_batch_transfer` in `LightningModule` but have passed in a `LightningDataModule`",
        r".*`isinstance\(treespec, LeafSpec\)` is deprecated",
        r".*The `srun` command is available on your system but is not used",
        # frozen backbones and frozen BatchNorm (transfer freeze_bn, a frozen V1 core) stay in eval on purpose
        r".*module\(s\) in eval mode at the start of training",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def build_trainer(cfg: RunConfig, run_dir: Path, loggers: list[Logger] | None = None,
                  extra_callbacks: list[Callback] | None = None, stage: str = "fit") -> pl.Trainer:
    t = cfg.trainer
    quiet_lightning()
    torch.set_float32_matmul_precision(t.matmul_precision)
    metric, mode = monitor_of(cfg)
    ckpt_dir = run_dir / "checkpoints"
    callbacks: list[Callback] = [StopOnNonFiniteLoss(), StreamPosition()]
    if stage == "fit":
        callbacks.append(ModelCheckpoint(
            dirpath=ckpt_dir, filename="epoch{epoch:03d}-step{step:07d}", monitor=metric, mode=mode,
            save_top_k=t.save_top_k, save_last=True, auto_insert_metric_name=False,
            # a run directory holds one run (vislab.train.run): a file of the same name is this run's own (e.g. a
            # resume of a moved directory), overwritten, never joined by last-v1.ckpt
            enable_version_counter=False,
        ))
        callbacks.append(LearningRateMonitor(logging_interval="step"))
        if t.early_stopping_patience is not None:
            callbacks.append(EarlyStopping(monitor=metric, mode=mode, patience=t.early_stopping_patience))
        if t.ema_decay:
            from pytorch_lightning.callbacks.weight_averaging import (
                EMAWeightAveraging,  # Lightning: kept off the CLI's start-up path
            )

            callbacks.append(EMAWeightAveraging(decay=t.ema_decay))
    bar, progress = _progress(cfg)
    callbacks += progress + list(extra_callbacks or [])
    if loggers is None:
        loggers = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    return pl.Trainer(
        default_root_dir=str(run_dir),
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=_strategy(cfg),
        precision=t.precision,  # type: ignore[arg-type]
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic,
        callbacks=callbacks,
        logger=loggers,
        enable_progress_bar=bar,
        enable_model_summary=stage == "fit",
        use_distributed_sampler=False,  # the shard streams split data across ranks themselves
        num_sanity_val_steps=0 if stage != "fit" else 2,
        plugins=[AtomicCheckpointIO(), *_cluster_plugins()],
    )


def _cluster_plugins() -> list[Any]:
    """Under srun: Slurm's ranks, without Lightning's requeue handler, which checkpoints from inside the
    signal handler while the step's DDP collectives may be in flight (vislab.train.slurm.preemption acts at a
    step boundary instead)."""
    from lightning_fabric.plugins.environments import (
        SLURMEnvironment,  # Lightning: kept off the CLI's start-up path
    )

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
