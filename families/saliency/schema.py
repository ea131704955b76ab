"""Schema of `task: saliency`: DeepGaze-II-style readout of frozen multi-layer features: a log-density over
fixation locations, trained by the negative log-likelihood of human fixations (no torch at import time).

Normalisation defaults to what the weights carry; a value in the config that contradicts them is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vislab.core.config import DataConfig, RunConfig
from vislab.models.backbone_config import BackboneConfig, check_backbone, check_normalisation, data_meta


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
class SaliencyConfig(RunConfig):
    """A `task: saliency` run."""

    data: FixationDataConfig = field(default_factory=FixationDataConfig)
    model: SaliencyModelConfig = field(default_factory=SaliencyModelConfig)



def check_saliency(cfg: Any, source: str) -> list[str]:
    m, d = cfg.model, cfg.data
    problems, wmeta = check_backbone(m.backbone, source)
    data_problems, _ = data_meta(d.root, source, "fixations")
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
        from vislab.models.backbones import (
            build_backbone,  # torch: only when the config names a valid backbone
        )

        names = build_backbone(m.backbone.name).layer_names()
        for layer in m.layers:
            if layer not in names and not any(n.startswith(layer + ".") for n in names):
                problems.append(f"{source}: 'model.layers': '{layer}' is not a layer of {m.backbone.name} "
                                f"(e.g. {', '.join(names[-3:])})")
    return problems
