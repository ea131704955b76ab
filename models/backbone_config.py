"""Pretrained-backbone settings shared by the families that read a backbone (transfer, saliency, ...):
the `model.backbone` config group, its checks, and normalisation taken from the weights (no torch at import)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vislab.data.manifest import Manifest, check_data_root

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class BackboneConfig:
    """Which pretrained network, and where its weights come from."""

    name: str = "efficientnet_lite0"
    """Architecture: a torchvision classification model name ('resnet50', 'convnext_tiny', ...), 'efficientnet_lite0',
    or a timm architecture as 'timm/<name>' ('timm/convnext_tiny'; weights from the Hugging Face hub cache)."""
    weights: str | None = "DEFAULT"
    """'DEFAULT' or an enum member ('IMAGENET1K_V2', 'ResNet50_Weights.IMAGENET1K_V2'); a vislab export
    directory; a .safetensors/.pt/.pth file; null = random initialisation."""
    key_map: dict[str, str] = field(default_factory=dict)
    """Key-prefix renames for weights files, e.g. {'module.encoder.': ''}; first matching prefix wins."""
    download: bool = True
    """Download weights missing from the torch hub cache (torchvision) or the Hugging Face hub cache (timm);
    off: the caches only."""

def _close(a: list[float] | None, b: list[float] | None) -> bool:
    return a is None or b is None or (len(a) == len(b) and all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(a, b, strict=True)))


def check_backbone(b: BackboneConfig, source: str) -> tuple[list[str], Any]:
    """Problems with the backbone settings, and the weights' metadata (None when unknown)."""
    from vislab.models.backbones import check_arch  # torch: kept off `vislab config show`'s start-up path
    from vislab.models.pretrained import (  # torch and Lightning: kept off the CLI's start-up path
        check_weights,
        describe_weights,
    )

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


def data_meta(root: str, source: str, family: str) -> tuple[list[str], dict[str, Any]]:
    problems = check_data_root(root, source)
    if problems:
        return problems, {}
    meta = Manifest.load(Path(root) / "train").meta
    if meta.get("family") != family:
        return [f"{source}: 'data.root'={root} holds '{meta.get('family')}' shards, this task reads '{family}' shards"], meta
    return [], meta
