"""Feature networks whose statistics define a texture: a list of named feature maps for an image batch.

    net = build_features(cfg.model)      # FeatureNet: pixels in [0, 1] (B, 3, H, W) -> {layer: (B, C, h, w)}
    net.layers                           # the layers it returns, in config order

- `RandomMultiScale`: Ustyuzhaninov, Brendel, Gatys & Bethge 2016 ("Texture synthesis using shallow
  convolutional networks with random filters"): one convolutional layer, filters of several sizes
  (3 ... 55 px), Gaussian random weights from a seed, ReLU. Large kernels are applied by FFT (zero-padded, so
  a linear 'same' convolution): a 55x55 kernel costs what a 3x3 one does.
- Pretrained backbones through `vislab.models.backbones` (torchvision feature extraction); VGG-19 layers can
  be named as in the papers ('relu1_1', 'pool4', ...); max-pooling is replaced by average pooling as Gatys
  et al. did; pixels are normalised with the weights' mean/std.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vislab.core.errors import ConfigError
from vislab.families.textures.schema import RANDOM_NET, TexturesModelConfig
from vislab.models.backbones import check_arch, pretrained_backbone
from vislab.models.pretrained import check_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG19_BLOCKS = (2, 2, 4, 4, 4)  # convolutions per block of torchvision's vgg19.features


def vgg_layer_names(blocks: Sequence[int] = VGG19_BLOCKS) -> dict[str, str]:
    """The papers' layer names -> torchvision's `features.<i>` node names (conv, relu per layer, pool per block)."""
    names: dict[str, str] = {}
    i = 0
    for b, convs in enumerate(blocks, start=1):
        for j in range(1, convs + 1):
            names[f"conv{b}_{j}"], names[f"relu{b}_{j}"] = f"features.{i}", f"features.{i + 1}"
            i += 2
        names[f"pool{b}"] = f"features.{i}"
        i += 1
    return names


def fft_size(n: int) -> int:
    """The smallest m >= n whose prime factors are 2, 3 and 5 (FFTs of other sizes are several times slower)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


class FeatureNet(nn.Module):
    """Pixels in [0, 1] -> named feature maps; frozen (only the image is optimised)."""

    layers: list[str]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class RandomMultiScale(FeatureNet):
    """One random convolutional layer with several filter sizes, ReLU (Ustyuzhaninov et al. 2016).

    Filters up to `fft_above` px are applied as one direct convolution, larger ones as one FFT convolution
    (each group centred in a canvas of its largest size, so every filter is 'same'-aligned). The FFT
    computes convolution, conv2d cross-correlation: both are random Gaussian filters, equal in law.
    """

    direct_weight: torch.Tensor
    fft_weight: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, filter_sizes: Sequence[int], channels_per_size: int, seed: int, layers: Sequence[str],
                 fft_above: int = 15):
        super().__init__()
        self.filter_sizes = list(filter_sizes)
        valid = self.layer_names()
        bad = [layer for layer in layers if layer not in valid]
        if bad:
            raise ConfigError([f"'model.layers': unknown layer '{bad[0]}' of {RANDOM_NET}; valid: {', '.join(valid)}"])
        self.layers = list(layers)
        self.channels_per_size = channels_per_size
        gen = torch.Generator().manual_seed(seed)
        weights = {k: torch.randn(channels_per_size, 3, k, k, generator=gen) / math.sqrt(3 * k * k)  # He-like
                   for k in self.filter_sizes}
        self.direct_sizes = [k for k in self.filter_sizes if k <= fft_above]
        self.fft_sizes = [k for k in self.filter_sizes if k > fft_above]
        self.register_buffer("direct_weight", _canvas([weights[k] for k in self.direct_sizes]))
        self.register_buffer("fft_weight", _canvas([weights[k] for k in self.fft_sizes]))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self._spectrum: dict[tuple[int, int], torch.Tensor] = {}

    def layer_names(self) -> list[str]:
        return ["all"] + [f"k{k}" for k in self.filter_sizes]

    def _kernel_spectrum(self, h: int, w: int) -> torch.Tensor:
        if (h, w) not in self._spectrum:  # the filters are fixed: one FFT per image size
            self._spectrum = {(h, w): torch.fft.rfft2(self.fft_weight, s=(h, w))}  # (S * C, 3, h, w // 2 + 1)
        return self._spectrum[(h, w)]

    def _fft_conv(self, x: torch.Tensor) -> torch.Tensor:
        kmax = int(self.fft_weight.shape[-1])
        height, width = x.shape[-2:]
        # zero-padded to at least H + kmax - 1: a linear (not circular) convolution; 5-smooth sizes for fast FFTs
        h, w = fft_size(height + kmax - 1), fft_size(width + kmax - 1)
        spec = torch.fft.rfft2(x, s=(h, w))  # (B, 3, h, w // 2 + 1)
        kernel = self._kernel_spectrum(h, w)
        # sum over the 3 input channels as 3 broadcast products (einsum's complex batched matmul is ~10x slower)
        out = sum(spec[:, i, None] * kernel[None, :, i] for i in range(3))  # (B, S * C, h, w // 2 + 1)
        y = torch.fft.irfft2(out, s=(h, w))  # type: ignore[arg-type]  # full convolution (B, S * C, h, w)
        c = (kmax - 1) // 2
        return y[..., c:c + height, c:c + width]  # the 'same' part, (B, S * C, H, W)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.mean) / self.std  # (B, 3, H, W)
        parts = []
        if self.direct_sizes:
            parts.append(F.conv2d(x, self.direct_weight, padding=int(self.direct_weight.shape[-1]) // 2))
        if self.fft_sizes:
            parts.append(self._fft_conv(x))
        by_group = torch.cat(parts, 1).split(self.channels_per_size, dim=1)  # direct sizes, then FFT sizes
        maps = {f"k{k}": F.relu(g) for k, g in zip(self.direct_sizes + self.fft_sizes, by_group, strict=True)}
        feats = {"all": torch.cat([maps[f"k{k}"] for k in self.filter_sizes], 1)} if "all" in self.layers else {}
        feats.update({layer: maps[layer] for layer in self.layers if layer != "all"})
        return feats


def _canvas(kernels: list[torch.Tensor]) -> torch.Tensor:
    """Odd-sized kernels, each centred in a zero canvas of the largest size: (sum C, 3, k, k)."""
    if not kernels:
        return torch.zeros(0, 3, 1, 1)
    k = max(w.shape[-1] for w in kernels)
    return torch.cat([F.pad(w, [(k - w.shape[-1]) // 2] * 4) for w in kernels])


class BackboneFeatures(FeatureNet):
    """Named layers of a pretrained backbone (through `Backbone.feature_extractor`), normalised input."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: TexturesModelConfig, layers: Sequence[str], key: str = "model.layers"):
        super().__init__()
        aliases = vgg_layer_names() if cfg.network.startswith("vgg19") else {}
        backbone = pretrained_backbone(cfg.network, cfg.weights, num_classes=0, download=cfg.download)
        valid = backbone.layer_names()
        nodes = [aliases.get(layer, layer) for layer in layers]
        bad = [layer for layer, node in zip(layers, nodes, strict=True) if node not in valid]
        if bad:
            close = difflib.get_close_matches(bad[0], list(aliases) + valid, n=3)
            shown = list(aliases) if aliases else [n for n in valid if n not in ("x", "inputs", "size")]
            raise ConfigError([f"'{key}': unknown layer '{bad[0]}' of {cfg.network} (closest: {close}); "
                               f"valid: {', '.join(shown)}"])
        self.layers = list(layers)
        self.nodes = nodes
        self.extractor = backbone.feature_extractor(list(dict.fromkeys(nodes)), frozen=True,
                                                    input_size=backbone.meta.input_size or 224)
        for m in self.extractor.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False  # a conv output taken as a layer must not be overwritten by its ReLU
        if cfg.pooling == "avg":
            _replace_max_pool(self.extractor)
        mean, std = backbone.meta.mean or list(IMAGENET_MEAN), backbone.meta.std or list(IMAGENET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.extractor((x - self.mean) / self.std)
        by_node = dict(zip(self.extractor.layers, maps, strict=True))
        return {layer: by_node[node] for layer, node in zip(self.layers, self.nodes, strict=True)}


def _replace_max_pool(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.MaxPool2d):
            setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
        else:
            _replace_max_pool(child)


def check_network(cfg: TexturesModelConfig, key: str = "model") -> None:
    """Name and weights of a pretrained network, before anything is loaded (ConfigError naming the cache file)."""
    if cfg.network == RANDOM_NET:
        return
    msg = check_arch(cfg.network)
    if msg:
        raise ConfigError([f"'{key}.network': {msg} (or {RANDOM_NET})"])
    msg = check_weights(cfg.network, cfg.weights, cfg.download, key=f"{key}.weights")
    if msg:
        raise ConfigError([msg])


def build_features(cfg: TexturesModelConfig, extra_layers: Sequence[str] = ()) -> FeatureNet:
    """The configured network returning `cfg.layers` (+ `extra_layers`, e.g. the content layer), frozen."""
    check_network(cfg)
    layers = list(dict.fromkeys([*cfg.layers, *extra_layers]))
    net: FeatureNet
    if cfg.network == RANDOM_NET:
        net = RandomMultiScale(cfg.filter_sizes, cfg.channels_per_size, cfg.network_seed, layers)
    else:
        net = BackboneFeatures(cfg, layers)
    return net.eval().requires_grad_(False)
