"""Resuming a run: what may change, and the state that makes the resumed run equal the uninterrupted one.

Before any work (`check_resume`, exit code 2): a resume continues the checkpoint's run, so a change that
would make it another run is refused: other data (the sha256 of every split's shard manifest; a moved copy
of the same shards is fine), the seed, the optimizer type and its parameter groups (`run.py` refuses another
task or architecture). Hyperparameters that the restored optimizer holds (`optim.lr`, `weight_decay`,
`momentum`, `nesterov`, `betas`, `plateau_*`) are applied to it when training starts (`OptimChanges`) and
printed; everything else is read from the config at start-up. `config.yaml` is the config that runs.

In checkpoints (`RunState`): the Python, numpy, torch and CUDA random states of every rank (restored when
training starts, so dropout and mixup draw what they would have drawn) and the data's manifest hashes.
Data loading never draws from these global states: every loader has its own generator and the training
stream seeds each batch (vislab.data.pipeline), so nothing between a checkpoint and the next step uses them.
"""

from __future__ import annotations

import random
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback

from vislab.core.checkpoints import CKPT_KEY, load_checkpoint
from vislab.core.config import OptimConfig, RunConfig
from vislab.core.errors import ConfigError
from vislab.data.manifest import MANIFEST, sha256_file, split_dirs
from vislab.models.optim import build_optimizer
from vislab.train.config import from_dict

RESUME_KEY = "vislab_resume"
"""Checkpoint entry: {"rng": [state of rank 0, rank 1, ...], "data_manifests_sha256": {split: sha256}}."""
APPLIED_OPTIM = ("lr", "weight_decay", "momentum", "nesterov", "betas", "plateau_factor", "plateau_patience",
                 "plateau_threshold")
"""optim.* keys whose values the restored optimizer (or plateau schedule) holds: applied to it on resume."""
REFUSED_OPTIM = ("name", "no_decay_norm_bias")
"""optim.* keys that decide the optimizer's state layout: a resume cannot change them."""


def manifest_hashes(root: str | Path) -> dict[str, str] | None:
    """{split: sha256 of its manifest} of a data root (None when it holds no shard set)."""
    return {s: sha256_file(d / MANIFEST) for s, d in split_dirs(root).items()} or None


def check_resume(cfg: RunConfig, ckpt: str | Path) -> OptimChanges | None:
    """Refuse (ConfigError) what would make the resumed run another run; the callback that applies the changed
    optimizer hyperparameters (None: nothing changed)."""
    ck = load_checkpoint(ckpt)
    saved = from_dict(ck[CKPT_KEY]["config"])
    problems = _data_problems(saved, cfg, ck.get(RESUME_KEY, {}).get("data_manifests_sha256"), ckpt)
    if saved.seed != cfg.seed:
        problems.append(f"{ckpt}: seed={cfg.seed}, the run was trained with seed={saved.seed}: a resume continues "
                        "its random streams; start a new run for another seed")
    for key in REFUSED_OPTIM:
        old, new = getattr(saved.optim, key), getattr(cfg.optim, key)
        if old != new:
            problems.append(f"{ckpt}: optim.{key}={new!r}, the run's optimizer state is for optim.{key}={old!r}: "
                            f"resume with optim.{key}={old!r}, or start a new run")
    if problems:
        raise ConfigError(problems)
    changes = [f"optim.{k} {getattr(saved.optim, k)!r} -> {getattr(cfg.optim, k)!r}" for k in APPLIED_OPTIM
               if getattr(saved.optim, k) != getattr(cfg.optim, k)]
    return OptimChanges(saved.optim, cfg.optim, changes) if changes else None


def _data_problems(saved: RunConfig, cfg: RunConfig, saved_hashes: dict[str, str] | None, ckpt: str | Path) -> list[str]:
    new_root, old_root = Path(str(cfg.data.root)), Path(str(saved.data.root))
    moved = "" if new_root.resolve() == old_root.resolve() else f" (the run trained on data.root={old_root})"
    if saved_hashes:
        new_hashes = manifest_hashes(new_root) or {}
        differ = sorted(s for s in set(saved_hashes) | set(new_hashes) if saved_hashes.get(s) != new_hashes.get(s))
        if differ:
            return [f"{ckpt}: data.root={new_root}{moved}: the shard manifests of {', '.join(differ)} differ from "
                    "those the run trained on; a resume continues the same data: start a new run (no resume) for "
                    "other data"]
        return []
    if moved:  # a checkpoint from before the hashes were recorded: the path is all there is to compare
        return [f"{ckpt}: data.root={new_root}{moved}: a resume continues the same data; start a new run for other data"]
    return []


# ------------------------------------------------------------------------------------------ random states
def rng_state() -> dict[str, Any]:
    """This process's random states, as types a `weights_only=True` load accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunState(Callback):
    """Writes every rank's random states and the data's manifest hashes into checkpoints; restores this rank's
    random states when a resumed fit starts training (after Lightning restored the rest, after the sanity
    check), so the steps that follow draw exactly what the uninterrupted run drew."""

    def __init__(self) -> None:
        self._group: Any = None
        self._restore: list[dict[str, Any]] | None = None
        self._hashes: dict[str, str] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._group is None and dist.is_available() and dist.is_initialized() and dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")  # CPU objects: keep them off the NCCL stream
        dm = getattr(trainer, "datamodule", None)  # set by Lightning once fit starts
        self._hashes = dm.manifest_hashes() if dm is not None and hasattr(dm, "manifest_hashes") else None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # every rank dumps the checkpoint (Lightning), rank 0 writes it: gather all ranks' states into it
        states: list[Any] = [rng_state()]
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            states = [None] * trainer.world_size
            dist.all_gather_object(states, rng_state(), group=self._group)
        checkpoint[RESUME_KEY] = {"rng": states, "data_manifests_sha256": self._hashes}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._restore = checkpoint.get(RESUME_KEY, {}).get("rng")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        states, self._restore = self._restore, None
        if states is None:
            return
        if len(states) != trainer.world_size:
            warnings.warn(f"the checkpoint holds the random states of {len(states)} processes, this run has "
                          f"{trainer.world_size}: training continues, but not as the uninterrupted run would", stacklevel=2)
            return
        set_rng_state(states[trainer.global_rank])


class OptimChanges(Callback):
    """Applies changed optimizer hyperparameters to the optimizer and schedule a resume restored (which
    would otherwise keep the checkpoint's values): the freshly configured optimizer's values per parameter
    group, and the learning rates scaled by new/old `optim.lr` so the schedule continues where it was."""

    def __init__(self, old: OptimConfig, new: OptimConfig, changes: list[str]):
        self.old, self.new, self.changes = old, new, changes

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        fresh = build_optimizer(pl_module.param_groups(), self.new)  # type: ignore[operator]
        if len(fresh.param_groups) != len(optimizer.param_groups):
            raise ConfigError([f"resume: {', '.join(self.changes)} cannot be applied: the restored optimizer has "
                               f"{len(optimizer.param_groups)} parameter groups, the config makes {len(fresh.param_groups)}"])
        ratio = self.new.lr / self.old.lr
        for group, new in zip(optimizer.param_groups, fresh.param_groups, strict=True):
            group.update({k: v for k, v in new.items() if k not in ("params", "lr", "initial_lr")})
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
        for config in trainer.lr_scheduler_configs:
            scheduler: Any = config.scheduler
            if hasattr(scheduler, "base_lrs"):
                scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
                scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.factor = self.new.plateau_factor
                scheduler.patience = self.new.plateau_patience
                scheduler.threshold = self.new.plateau_threshold
        if trainer.is_global_zero:
            print(f"[vislab] resume at step {trainer.global_step}: applied {', '.join(self.changes)} to the restored "
                  "optimizer (the schedule continues)", file=sys.stderr, flush=True)
