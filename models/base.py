"""What every family's LightningModule shares: the optimizer recipe, the saved config, the bare model.

A family subclass builds `self.model` (a plain nn.Module: the thing that is exported) and implements the
steps. The run's config travels inside every checkpoint (`checkpoint["vislab"]`), so a checkpoint can be
checked against a config before it is loaded and exported without the YAML that made it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from vislab.core.checkpoints import CKPT_KEY
from vislab.core.config import RunConfig, to_dict
from vislab.models.optim import ParamGroup, build_optimizer, build_plateau, build_scheduler, decay_groups


class VislabModule(pl.LightningModule):
    model: nn.Module
    metrics: nn.ModuleDict
    """{split: {name: torchmetrics.Metric}}, for families that use the default `_eval_epoch_end`."""

    def __init__(self, cfg: RunConfig, meta: dict[str, Any] | None = None):
        super().__init__()
        self.cfg = cfg
        self.meta = dict(meta or {})
        """Facts about the data the model was built for (class names, sessions, statistics)."""
        self.monitor: tuple[str, str] = (cfg.trainer.monitor or "val/loss", "min")
        """(metric, mode) the plateau schedule follows; the assembly sets the family's (`train.families.monitor_of`)."""

    # ----- optimisation -----
    def param_groups(self) -> list[ParamGroup]:
        """Parameter groups with `lr_scale`; families override for per-layer learning rates."""
        o = self.cfg.optim
        return decay_groups(self, o.weight_decay, o.no_decay_norm_bias)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.param_groups(), self.cfg.optim)
        if self.cfg.optim.scheduler == "plateau":
            metric, mode = self.monitor
            plateau = build_plateau(optimizer, self.cfg.optim, mode)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "interval": "epoch", "monitor": metric,
                                                              "frequency": self.cfg.trainer.check_val_every_n_epoch, "name": "lr"}}
        total = int(self.trainer.estimated_stepping_batches)  # also sets num_training_batches
        per_epoch = math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches)
        scheduler = build_scheduler(optimizer, self.cfg.optim, max(1, per_epoch), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}

    def on_train_start(self) -> None:
        # torch.optim adds 'initial_lr' itself; record the derived values once, next to the metrics
        if self.logger is not None:
            self.logger.log_hyperparams({"derived": self.cfg.derived()})

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # samples lost to bad shards under data.on_error=skip: counted, never silent
        skipped = batch.get("skipped") if isinstance(batch, dict) else None
        if skipped:
            self.log("train/skipped_samples", float(skipped), reduce_fx="sum", on_step=False, on_epoch=True)

    # ----- evaluation: a family implements `_eval_step(batch, split)`; with its torchmetrics in
    # `self.metrics[split]` (an nn.ModuleDict of ModuleDicts) the default epoch end logs and resets them -----
    def _eval_step(self, batch: Any, split: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _eval_step(batch, split)")

    def _eval_epoch_end(self, split: str) -> None:
        m: Any = self.metrics[split]
        # values are already synced by torchmetrics; sync_dist only keeps Lightning from warning
        self.log_dict({f"{split}/{k}": v.compute() for k, v in m.items()}, prog_bar=split == "val", sync_dist=True)
        for v in m.values():
            v.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # ----- checkpoints carry their config -----
    export_facts: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """meta -> {'spec': ..., 'info': ...} (set by the assembly): stored in every checkpoint, so that anything,
    e.g. the robustness family, rebuilds the bare network from a run directory without knowing its family."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        entry = {"config": to_dict(self.cfg), "meta": self.meta}
        if self.export_facts is not None:
            entry.update(self.export_facts(self.meta))
        checkpoint[CKPT_KEY] = entry

    def log_metric_dict(self, metrics: dict[str, torch.Tensor | float], **kw: Any) -> None:
        self.log_dict({k: (v if isinstance(v, torch.Tensor) else torch.tensor(float(v))) for k, v in metrics.items()}, **kw)
