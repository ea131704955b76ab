"""Optimizers and per-step LR schedules shared by every family (the recipe lives in `OptimConfig`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial

import torch
from torch import nn

from vislab.core.config import OptimConfig

ParamGroup = dict  # {"params": [...], "lr_scale": float, "weight_decay": float, "name": str}


def decay_groups(module: nn.Module, weight_decay: float, no_decay_norm_bias: bool, lr_scale: float = 1.0,
                 name: str = "") -> list[ParamGroup]:
    """Split trainable parameters into decayed weights and undecayed biases/norm parameters (1-D tensors)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if (no_decay_norm_bias and p.ndim <= 1) else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale, "name": f"{name}decay"})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": lr_scale, "name": f"{name}no_decay"})
    return groups


def build_optimizer(groups: Iterable[ParamGroup], cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = [dict(g, lr=cfg.lr * g.get("lr_scale", 1.0)) for g in groups]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))  # type: ignore[arg-type]
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))  # type: ignore[arg-type]


def lr_factor(step: int, *, cfg: OptimConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the peak LR at optimizer step `step`: linear warmup, then cosine / step / constant."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * step / warmup
    if cfg.scheduler == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.scheduler == "step":
        epoch = step // max(1, steps_per_epoch)
        return cfg.step_gamma ** sum(epoch >= m for m in cfg.step_milestones)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:

    fn = partial(lr_factor, cfg=cfg, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def build_plateau(optimizer: torch.optim.Optimizer, cfg: OptimConfig, mode: str) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """LR decay on a plateau of the monitored metric (neuralpredictors' trainer), floored at `min_lr_factor * lr`."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max" if mode == "max" else "min", factor=cfg.plateau_factor, patience=cfg.plateau_patience,
        threshold=cfg.plateau_threshold, threshold_mode="abs", min_lr=[g["lr"] * cfg.min_lr_factor for g in optimizer.param_groups],
    )
