"""Schema of texture synthesis and style transfer (`task: textures`): images optimised, not weights.

Defaults are the offline texture model: Ustyuzhaninov et al. 2016's random shallow multi-scale network
(one convolutional layer with several filter sizes, random weights from a seed, ReLU; no trained weights),
Gram-matrix loss (Gatys, Ecker & Bethge 2015), L-BFGS on the pixels from seeded noise. Pretrained feature
networks (VGG-19 as in the papers, EfficientNet-Lite0 offline, any registry backbone) are chosen by
`model.network`; style transfer adds a content layer and colour/spatial/scale control (Gatys et al. 2016, 2017).
Light module (no torch): configs are validated before anything is imported or optimised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vislab.core.config import DataConfig, RunConfig

RANDOM_NET = "random_multiscale"
RANDOM_SIZES = [3, 5, 7, 11, 15, 23, 37, 55]


@dataclass
class TexturesModelConfig:
    """The feature network whose statistics are matched, and which of its layers."""

    network: str = RANDOM_NET
    """'random_multiscale' (Ustyuzhaninov 2016) or a registry backbone: 'vgg19' (the papers), 'efficientnet_lite0'."""
    weights: str | None = "DEFAULT"
    """Backbone weights (`model.backbone.weights` syntax of vislab.models.pretrained); ignored by the random net."""
    download: bool = False
    """Allow torchvision to download missing weights (a cluster with network); otherwise the hub cache only."""
    layers: list[str] = field(default_factory=lambda: ["all"])
    """Layers whose Gram matrices are matched. Random net: 'all' (every filter size as one layer, the paper's
    model) or 'k<size>' per filter size; VGG: 'conv1_1', 'relu1_1', 'pool1', ...; other backbones: FX node names."""
    layer_weights: list[float] = field(default_factory=list)
    """Weight per entry of `layers` (empty: 1 each; losses are relative Gram distances, so 1 is balanced)."""
    content_layer: str | None = None
    """Style transfer: the layer whose activations are matched to the content image (VGG: 'relu4_2')."""
    pooling: Literal["avg", "max"] = "avg"
    """Max-pooling of pretrained backbones replaced by average pooling, as the papers did ('max': unchanged)."""
    filter_sizes: list[int] = field(default_factory=lambda: list(RANDOM_SIZES))
    """Random net: odd filter sizes, one group of `channels_per_size` random filters each."""
    channels_per_size: int = 32
    """Random net: filters per size (the paper: 128, i.e. 1024 maps; 32 keeps a 256-px image fast on a CPU)."""
    network_seed: int = 0
    """Random net: seed of the filter weights (the same seed gives the same network on every rank)."""


@dataclass
class TexturesDataConfig(DataConfig):
    """Source images: given on the command line, or a shard set (`--data DIR`, every image synthesised once)."""

    root: str = ""
    """A shard set directory (manifest.json + shards) of source images, or '' for images on the command line."""
    batch_size: int = 1
    """Sources optimised together as one batch of independent images (per process)."""
    num_workers: int = 0
    image_size: int = 256
    """Side of the synthesised (square) image in pixels; style transfer: the content's shorter side."""
    source_size: int | None = None
    """Shorter side the sources (and style images) are resized to before their statistics are taken
    (default: image_size)."""
    min_side: int = 32
    """Sources whose shorter side is below this are rejected before any optimisation."""
    samples_per_source: int = 1
    """Independent results per texture source (different noise seeds)."""


@dataclass
class TexturesLossConfig:
    """Terms of the objective (each per image; relative distances, so weights are comparable across layers)."""

    style_weight: float = 1.0
    content_weight: float = 1.0
    """Style transfer only (weight of the content loss at `model.content_layer`)."""
    tv_weight: float = 0.0
    """Total variation of the image (smoothness prior)."""
    range_weight: float = 10.0
    """Penalty on pixels outside [0, 1] (mean squared excess): keeps the optimised image the one that is saved
    (the result is clamped to [0, 1]; unconstrained L-BFGS leaves pixels at -0.9 ... 2.1)."""
    color: Literal["none", "luminance", "histogram"] = "none"
    """Style transfer colour preservation (Gatys et al. 2016): 'luminance' transfers style on the luminance
    channel only and keeps the content's chroma (YIQ); 'histogram' first gives the style image the content's
    colour mean and covariance."""
    masks: list[str] = field(default_factory=list)
    """Spatial control (Gatys et al. 2017): one mask image per style image, the content's size; region r of
    the result takes its texture from style image r."""


@dataclass
class TexturesSynthConfig:
    """The optimisation of the pixels."""

    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    steps: int = 300
    """Optimisation steps per scale (L-BFGS: iterations)."""
    lr: float = 1.0
    """L-BFGS step size (1 as in the papers) or Adam learning rate (e.g. 0.02 for pixels in [0, 1])."""
    history_size: int = 100
    """L-BFGS memory."""
    line_search: Literal["none", "strong_wolfe"] = "none"
    init: Literal["spectrum", "noise", "content"] = "spectrum"
    """'spectrum': seeded random-phase noise with the source's amplitude spectrum (L-BFGS converges from it);
    'noise': seeded white noise (the papers; slow with the random net); 'content': the content image (style)."""
    scales: list[int] = field(default_factory=list)
    """Coarse-to-fine (Gatys et al. 2017): sides synthesised first, each upsampled and refined; the final
    side is data.image_size. Empty: one scale."""
    log_every: int = 10
    """Record the loss curve every this many steps."""
    gather_timeout_s: int = 3600
    """Shard sets: how long rank 0 waits for the other ranks' results before failing (naming the missing ranks)."""


@dataclass
class TexturesEvalConfig:
    """The papers' evaluation on a network different from the synthesising one."""

    network: str | None = "efficientnet_lite0"
    """Backbone measuring Gram distances (None: skip the evaluation)."""
    weights: str | None = "DEFAULT"
    layers: list[str] = field(default_factory=lambda: ["_blocks.0", "_blocks.2", "_blocks.4", "_blocks.7", "_blocks.10"])
    """Layers whose Gram matrices are compared. Default: the last block of each EfficientNet-Lite0 stage up to
    stride 16 (strides 2, 4, 8, 16, 16), as Gatys et al. used VGG-19 up to pool4 (stride 16); stride-32 blocks
    have 2x2 ... 8x8 positions at these sizes, too few for a Gram matrix."""


@dataclass
class TexturesConfig(RunConfig):
    task: str = "textures"
    experiment: str = "textures"
    data: TexturesDataConfig = field(default_factory=TexturesDataConfig)
    model: TexturesModelConfig = field(default_factory=TexturesModelConfig)
    loss: TexturesLossConfig = field(default_factory=TexturesLossConfig)
    synth: TexturesSynthConfig = field(default_factory=TexturesSynthConfig)
    eval: TexturesEvalConfig = field(default_factory=TexturesEvalConfig)

    def source_side(self) -> int:
        return self.data.source_size or self.data.image_size

    def scale_sides(self) -> list[int]:
        """Sides synthesised in order, ending at data.image_size."""
        return [s for s in self.synth.scales if s < self.data.image_size] + [self.data.image_size]


def check_config(cfg: TexturesConfig, source: str) -> list[str]:
    """Checks beyond types that need no torch (layers and weights are checked when the network is built)."""
    p: list[str] = []
    m, d, s = cfg.model, cfg.data, cfg.synth
    if cfg.task != "textures":
        p.append(f"{source}: 'task' must be textures for this schema, not {cfg.task}")
    if not m.layers:
        p.append(f"{source}: 'model.layers' is empty")
    if m.layer_weights and len(m.layer_weights) != len(m.layers):
        p.append(f"{source}: 'model.layer_weights' has {len(m.layer_weights)} entries, model.layers {len(m.layers)}")
    if m.network == RANDOM_NET:
        bad = [k for k in m.filter_sizes if k < 1 or k % 2 == 0]
        if bad or not m.filter_sizes:
            p.append(f"{source}: 'model.filter_sizes' must be odd positive sizes, got {m.filter_sizes}")
        if m.channels_per_size < 1:
            p.append(f"{source}: 'model.channels_per_size' must be >= 1")
    if d.image_size < d.min_side:
        p.append(f"{source}: 'data.image_size'={d.image_size} is below data.min_side={d.min_side}")
    if d.samples_per_source < 1:
        p.append(f"{source}: 'data.samples_per_source' must be >= 1")
    if d.root and not (Path(d.root) / "manifest.json").is_file():
        p.append(f"{source}: 'data.root'={d.root} is not a shard set (no manifest.json)")
    if s.steps < 1:
        p.append(f"{source}: 'synth.steps' must be >= 1")
    if s.lr <= 0:
        p.append(f"{source}: 'synth.lr' must be > 0")
    if any(x < d.min_side for x in s.scales):
        p.append(f"{source}: 'synth.scales' {s.scales} has sides below data.min_side={d.min_side}")
    for mask in cfg.loss.masks:
        if not Path(mask).is_file():
            p.append(f"{source}: 'loss.masks': mask file not found: {mask}")
    return p
