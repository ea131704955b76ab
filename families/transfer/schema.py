"""Schema of `task: transfer` (no torch at import time): a pretrained backbone + a new classification head:
a linear probe on frozen features (fast path: features extracted once into shards) or fine-tuning with
per-group learning rates, layers frozen by name and optional gradual unfreezing.

Normalisation and evaluation input size default to what the weights carry (`null` here = "from the
weights"); a value in the config that contradicts the weights is an error, found before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Literal

from vislab.core.config import DataConfig, RunConfig
from vislab.models.backbone_config import BackboneConfig, check_backbone, check_normalisation, data_meta


@dataclass
class LrGroupConfig:
    """Backbone parameters trained at `lr_scale` x optim.lr (e.g. the top blocks at 1/10)."""

    layers: list[str] = field(default_factory=list)
    """fnmatch patterns of backbone parameter names, e.g. 'body._blocks.1[2-5].*' or 'body.layer4.*'."""
    lr_scale: float = 0.1


@dataclass
class TransferModelConfig:
    """A pretrained backbone with a new classification head."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    mode: Literal["probe", "finetune"] = "probe"
    """'probe': a linear head on frozen pre-logit features; 'finetune': the backbone trains too."""
    num_classes: int | None = None
    """Default: the number of classes in the training shards."""
    keep_head: bool = False
    """Keep the pretrained classifier (the data's class names must then equal the weights')."""
    cache_features: bool = True
    """Probe only: extract features once into shards and train the head on them (fast path)."""
    feature_cache: str = "feature_cache"
    """Directory of cached feature shards (one sub-directory per backbone, weights, preprocessing and data)."""
    label_smoothing: float = 0.0
    lr_groups: list[LrGroupConfig] = field(default_factory=list)
    """Fine-tuning: backbone parameter groups with their own learning-rate scale (first match wins)."""
    backbone_lr_scale: float = 0.01
    """Fine-tuning: scale of backbone parameters in no `lr_groups` entry (the head trains at 1x)."""
    freeze: list[str] = field(default_factory=list)
    """fnmatch patterns of backbone parameter names kept frozen; their BatchNorm layers stay in eval mode."""
    freeze_bn: bool = False
    """Keep every BatchNorm layer in eval mode (running statistics of the pretraining data)."""
    gradual_unfreeze: list[int] = field(default_factory=list)
    """Epochs at which the next group down unfreezes (head only before the first; then lr_groups in
    order; the rest of the backbone at the last), e.g. [1, 2]. Empty: everything trains from the start."""
    head_init: str | None = None
    """Initialise the head from another transfer run's export or checkpoint (linear probe, then fine-tune)."""

@dataclass
class TransferDataConfig(DataConfig):
    """Image shards (an imagefolder import) and the augmentation recipe."""

    augment: bool = True
    """Random resized crops + flips in training; off = the evaluation transform (the probe's setting)."""
    train_crop: int | None = None
    """Training crop side (may be smaller than the evaluation input: FixRes); default: the weights' input size."""
    min_scale: float = 0.08
    hflip: bool = True
    randaugment_ops: int = 0
    randaugment_magnitude: int = 9
    eval_resize: int | None = None
    """Shorter side before the evaluation centre crop; default: the weights'."""
    eval_crop: int | None = None
    """Evaluation input side; default (and only valid value when the weights say): the weights'."""
    mean: list[float] | None = None
    """Per-channel mean of [0, 1] pixels; default: the weights'."""
    std: list[float] | None = None


@dataclass
class TransferConfig(RunConfig):
    """A `task: transfer` run."""

    data: TransferDataConfig = field(default_factory=TransferDataConfig)
    model: TransferModelConfig = field(default_factory=TransferModelConfig)


# ------------------------------------------------------------------------------------------- checks
def resolved_image_sizes(d: TransferDataConfig, meta: Any) -> dict[str, int]:
    crop = d.eval_crop or (meta.input_size if meta is not None else None) or 224
    resize = d.eval_resize or (meta.resize if meta is not None else None) or round(crop * 256 / 224)
    return {"eval_crop": crop, "eval_resize": resize, "train_crop": d.train_crop or crop}


def check_transfer(cfg: Any, source: str) -> list[str]:
    m, d = cfg.model, cfg.data
    problems, wmeta = check_backbone(m.backbone, source)
    data_problems, dmeta = data_meta(d.root, source, "image")
    problems += data_problems
    if wmeta is not None:
        problems += check_normalisation(d, wmeta, source)
        for key, theirs in (("eval_crop", wmeta.input_size), ("eval_resize", wmeta.resize)):
            user = getattr(d, key)
            if user is not None and theirs is not None and user != theirs:
                problems.append(f"{source}: 'data.{key}'={user} contradicts the weights' {theirs} ({wmeta.source}); "
                                f"train at another size with data.train_crop")
    classes = dmeta.get("classes") or []
    if m.num_classes is not None and classes and m.num_classes < len(classes):
        problems.append(f"{source}: 'model.num_classes'={m.num_classes} but the shards in {d.root} have {len(classes)} classes")
    if m.keep_head and wmeta is not None and classes and wmeta.class_names and classes != wmeta.class_names:
        first = next((c for c, w in zip(classes, wmeta.class_names, strict=False) if c != w), classes[0])
        problems.append(f"{source}: 'model.keep_head'=true but the data's classes ({len(classes)}, e.g. '{first}') are not "
                        f"the weights' {len(wmeta.class_names)} classes; set keep_head=false for a new head")
    if m.mode == "probe" and m.cache_features and d.augment:
        problems.append(f"{source}: cached features (model.cache_features=true) have no augmentation: set data.augment=false")
    if m.mode == "probe" and (m.lr_groups or m.gradual_unfreeze or m.freeze):
        problems.append(f"{source}: model.lr_groups / freeze / gradual_unfreeze apply to mode=finetune only")
    if m.gradual_unfreeze != sorted(m.gradual_unfreeze) or any(e < 1 for e in m.gradual_unfreeze):
        problems.append(f"{source}: 'model.gradual_unfreeze' must be increasing epochs >= 1, got {m.gradual_unfreeze}")
    if m.gradual_unfreeze and len(m.gradual_unfreeze) != len(m.lr_groups) + 1:
        problems.append(f"{source}: 'model.gradual_unfreeze' needs one epoch per lr_group plus one for the rest "
                        f"({len(m.lr_groups) + 1}), got {len(m.gradual_unfreeze)}")
    if m.head_init is not None and not Path(m.head_init).exists():
        problems.append(f"{source}: 'model.head_init' does not exist: {m.head_init}")
    if m.mode == "finetune" and not any("'model.backbone.name'" in p for p in problems):
        problems += check_patterns(m, source)
    return problems


def check_patterns(m: TransferModelConfig, source: str) -> list[str]:
    """Every freeze / lr_groups pattern must match some backbone parameter (builds the bare network)."""

    from vislab.models.backbones import (  # torch and Lightning: kept off the CLI's start-up path
        build_backbone,
        parameter_names,
    )

    names = parameter_names(build_backbone(m.backbone.name, num_classes=0))
    problems = []
    patterns = [("model.freeze", p) for p in m.freeze] + [
        (f"model.lr_groups[{i}].layers", p) for i, g in enumerate(m.lr_groups) for p in g.layers]
    for key, pattern in patterns:
        if not any(fnmatch(n, pattern) for n in names):
            problems.append(f"{source}: '{key}' pattern '{pattern}' matches no parameter of {m.backbone.name} "
                            f"(names look like '{names[0]}', '{names[len(names) // 2]}')")
    return problems


