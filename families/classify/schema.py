"""Schema of the image-classification family (`task: classify`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vislab.core.config import DataConfig, RunConfig
from vislab.data.manifest import Manifest, check_data_root

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class ImageDataConfig(DataConfig):
    """Image shards and the augmentation recipe (torchvision.transforms.v2)."""

    train_crop: int = 224
    """RandomResizedCrop output size."""
    min_scale: float = 0.08
    """Smallest area fraction RandomResizedCrop may keep."""
    eval_resize: int = 256
    """Shorter side before the centre crop at evaluation."""
    eval_crop: int = 224
    hflip: bool = True
    randaugment_ops: int = 0
    """RandAugment operations per image (0 = off; 2 is the usual setting)."""
    randaugment_magnitude: int = 9
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    """Mixup / CutMix (one of them per batch, chosen at random when both are > 0)."""
    grayscale: bool = False
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    """Per-channel mean of [0, 1] pixels subtracted on the device."""
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))


@dataclass
class ClassifierModelConfig:
    """Any registered architecture (`vislab models` lists them) with a fresh head of `num_classes`."""

    name: str = "resnet50"
    num_classes: int = 1000
    label_smoothing: float = 0.0
    dropout: float | None = None
    """Dropout before the classifier, for architectures whose constructor takes `dropout`."""


@dataclass
class ClassifyConfig(RunConfig):
    """A `task: classify` run."""

    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)


def check(cfg: Any, source: str) -> list[str]:
    from vislab.models.registry import (
        unknown_model_message,  # torch: kept off `vislab config show`'s start-up path
    )

    problems = []
    msg = unknown_model_message(cfg.model.name)
    if msg:
        problems.append(f"{source}: 'model.name': {msg}")
    root_problems = check_data_root(cfg.data.root, source)
    problems += root_problems
    if not root_problems:
        meta = Manifest.load(f"{cfg.data.root}/train").meta
        n = meta.get("num_classes")
        if n is not None and n > cfg.model.num_classes:
            problems.append(f"{source}: 'model.num_classes'={cfg.model.num_classes} but the shards in {cfg.data.root} have {n} classes")
    if len(cfg.data.mean) != len(cfg.data.std):
        problems.append(f"{source}: 'data.mean' and 'data.std' must have the same length")
    return problems
