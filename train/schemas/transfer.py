"""Schemas of the transfer-learning families (no torch at import time).

`task: transfer`  a pretrained backbone + a new classification head: a linear probe on frozen features
                  (fast path: features extracted once into shards) or fine-tuning with per-group learning
                  rates, layers frozen by name and optional gradual unfreezing.
`task: saliency`  DeepGaze-II-style readout of frozen multi-layer features: a log-density over fixation
                  locations, trained by the negative log-likelihood of human fixations.

Normalisation and evaluation input size default to what the weights carry (`null` here = "from the
weights"); a value in the config that contradicts the weights is an error, found before any work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vislab.train.config import DataConfig, RunConfig

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class BackboneConfig:
    """Which pretrained network, and where its weights come from."""

    name: str = "efficientnet_lite0"
    """Architecture: a torchvision classification model name ('resnet50', 'convnext_tiny', ...) or 'efficientnet_lite0'."""
    weights: str | None = "DEFAULT"
    """'DEFAULT' or an enum member ('IMAGENET1K_V2', 'ResNet50_Weights.IMAGENET1K_V2'); a vislab export
    directory; a .safetensors/.pt/.pth file; null = random initialisation."""
    key_map: dict[str, str] = field(default_factory=dict)
    """Key-prefix renames for weights files, e.g. {'module.encoder.': ''}; first matching prefix wins."""
    download: bool = True
    """Download torchvision weights missing from the torch hub cache (off: the cache only)."""


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
class SaliencyModelConfig:
    """DeepGaze II (Kümmerer et al. 2016, arXiv 1610.01563) on a frozen backbone."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    layers: list[str] = field(default_factory=lambda: ["_blocks.10", "_blocks.14", "_blocks.15", "_swish_1"])
    """Backbone layers read out (upsampled to the finest of them and concatenated)."""
    readout_channels: list[int] = field(default_factory=lambda: [16, 32, 2])
    """Hidden 1x1 convolutions (softplus after each) before the final 1-channel one (DeepGaze II: 16, 32, 2)."""
    feature_dropout: float = 0.0
    """Dropout2d on the concatenated features in training (channel dropout)."""
    blur_sigma: float = 0.035
    """Initial Gaussian blur width as a fraction of the density width (learned)."""
    max_blur_sigma: float = 0.12
    """Largest blur width the fixed kernel can represent (fraction of the density width)."""
    center_bias_weight: float = 1.0
    """Initial weight of the log centre-bias density (learned)."""
    cache_features: bool = True
    """Compute the frozen features once into shards (with those of the mirrored training images) and train
    the readout on them; off = run the backbone at every step."""
    feature_cache: str = "feature_cache"
    """Directory of cached feature shards."""


@dataclass
class FixationDataConfig(DataConfig):
    """Image + fixation shards (`vislab shard SRC --format osie|fixations-csv`)."""

    image_size: list[int] = field(default_factory=lambda: [288, 384])
    """(height, width) the images are resized to for the backbone (multiples of 32)."""
    density_size: list[int] = field(default_factory=lambda: [72, 96])
    """(height, width) of the predicted density and of the fixation maps it is scored on."""
    hflip: bool = True
    """Mirror image and fixations at random in training."""
    mean: list[float] | None = None
    """Per-channel mean of [0, 1] pixels; default: the weights'."""
    std: list[float] | None = None
    center_bias_bandwidths: list[float] = field(default_factory=lambda: [0.02, 0.03, 0.05, 0.07, 0.1, 0.14])
    """Candidate Gaussian KDE widths (fraction of the density width) for the centre bias; the one with the
    best likelihood on held-out training images is used."""


@dataclass
class TransferConfig(RunConfig):
    """A `task: transfer` run."""

    data: TransferDataConfig = field(default_factory=TransferDataConfig)
    model: TransferModelConfig = field(default_factory=TransferModelConfig)


@dataclass
class SaliencyConfig(RunConfig):
    """A `task: saliency` run."""

    data: FixationDataConfig = field(default_factory=FixationDataConfig)
    model: SaliencyModelConfig = field(default_factory=SaliencyModelConfig)


# ------------------------------------------------------------------------------------------- checks
def _close(a: list[float] | None, b: list[float] | None) -> bool:
    return a is None or b is None or (len(a) == len(b) and all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a, b, strict=True)))


def check_backbone(b: BackboneConfig, source: str) -> tuple[list[str], Any]:
    """Problems with the backbone settings, and the weights' metadata (None when unknown)."""
    from vislab.models.backbones import check_arch
    from vislab.models.pretrained import check_weights, describe_weights

    msg = check_arch(b.name)
    if msg:
        return [f"{source}: 'model.backbone.name': {msg}"], None
    msg = check_weights(b.name, b.weights, b.download)
    if msg:
        return [f"{source}: {msg}"], None
    return [], describe_weights(b.name, b.weights)


def check_normalisation(d: Any, meta: Any, source: str) -> list[str]:
    p = []
    for key in ("mean", "std"):
        user, theirs = getattr(d, key), getattr(meta, key)
        if user is not None and not _close(user, theirs):
            p.append(f"{source}: 'data.{key}'={user} contradicts the weights' {key} {theirs} ({meta.source}); remove it")
        if user is not None and len(user) != 3:
            p.append(f"{source}: 'data.{key}' needs 3 values, got {len(user)}")
    return p


def resolved_normalisation(d: Any, meta: Any) -> tuple[list[float], list[float]]:
    """(mean, std): the weights' when they say, else the config's, else ImageNet's."""
    mean = (meta.mean if meta is not None else None) or d.mean or IMAGENET_MEAN
    std = (meta.std if meta is not None else None) or d.std or IMAGENET_STD
    return list(mean), list(std)


def resolved_image_sizes(d: TransferDataConfig, meta: Any) -> dict[str, int]:
    crop = d.eval_crop or (meta.input_size if meta is not None else None) or 224
    resize = d.eval_resize or (meta.resize if meta is not None else None) or round(crop * 256 / 224)
    return {"eval_crop": crop, "eval_resize": resize, "train_crop": d.train_crop or crop}


def _data_meta(root: str, source: str, family: str) -> tuple[list[str], dict[str, Any]]:
    from vislab.data.manifest import Manifest, check_data_root

    problems = check_data_root(root, source)
    if problems:
        return problems, {}
    meta = Manifest.load(Path(root) / "train").meta
    if meta.get("family") != family:
        return [f"{source}: 'data.root'={root} holds '{meta.get('family')}' shards, this task reads '{family}' shards"], meta
    return [], meta


def check_transfer(cfg: Any, source: str) -> list[str]:
    m, d = cfg.model, cfg.data
    problems, wmeta = check_backbone(m.backbone, source)
    data_problems, dmeta = _data_meta(d.root, source, "image")
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
    from fnmatch import fnmatch

    from vislab.models.backbones import build_backbone, parameter_names

    names = parameter_names(build_backbone(m.backbone.name, num_classes=0))
    problems = []
    patterns = [("model.freeze", p) for p in m.freeze] + [
        (f"model.lr_groups[{i}].layers", p) for i, g in enumerate(m.lr_groups) for p in g.layers]
    for key, pattern in patterns:
        if not any(fnmatch(n, pattern) for n in names):
            problems.append(f"{source}: '{key}' pattern '{pattern}' matches no parameter of {m.backbone.name} "
                            f"(names look like '{names[0]}', '{names[len(names) // 2]}')")
    return problems


def check_saliency(cfg: Any, source: str) -> list[str]:
    m, d = cfg.model, cfg.data
    problems, wmeta = check_backbone(m.backbone, source)
    data_problems, _ = _data_meta(d.root, source, "fixations")
    problems += data_problems
    if wmeta is not None:
        problems += check_normalisation(d, wmeta, source)
    for key in ("image_size", "density_size"):
        v = getattr(d, key)
        if len(v) != 2 or min(v) < 1:
            problems.append(f"{source}: 'data.{key}' must be [height, width], got {v}")
    if len(d.image_size) == 2 and any(s % 32 for s in d.image_size):
        problems.append(f"{source}: 'data.image_size'={d.image_size}: use multiples of 32 (the backbones' largest stride)")
    if not m.layers:
        problems.append(f"{source}: 'model.layers' is empty")
    if not 0 < m.blur_sigma < m.max_blur_sigma:
        problems.append(f"{source}: need 0 < model.blur_sigma < model.max_blur_sigma")
    if not any("'model.backbone.name'" in p for p in problems):
        from vislab.models.backbones import build_backbone

        names = build_backbone(m.backbone.name).layer_names()
        for layer in m.layers:
            if layer not in names and not any(n.startswith(layer + ".") for n in names):
                problems.append(f"{source}: 'model.layers': '{layer}' is not a layer of {m.backbone.name} "
                                f"(e.g. {', '.join(names[-3:])})")
    return problems
