"""Where people look (`task: saliency`): a DeepGaze-II-style readout of frozen backbone features.

DeepGaze II (Kümmerer, Wallis, Gatys & Bethge 2016, arXiv 1610.01563; 2017 ICCV):

    frozen features at several layers (upsampled to the finest, concatenated, normalised per layer)
    -> 1x1 convolutions with softplus (16, 32, 2, 1 channels)  -> upsample to the density grid
    -> Gaussian blur with a learned width  -> + w * log centre-bias density (from the training fixations)
    -> log-softmax over all grid cells = log p(fixation in cell)

trained by the negative log-likelihood of the fixations. Metrics (`vislab.families.saliency.metrics`):
information gain over the centre bias (bits/fixation), log-likelihood, AUC and NSS; example saliency maps
are logged as images at every validation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchvision.models.convnext import LayerNorm2d

from vislab.core.dist import global_rank
from vislab.data.features import cached_features, weights_identity
from vislab.data.images import PixelNormalise, normalise
from vislab.data.modules import ShardDataModule
from vislab.data.pipeline import Decode
from vislab.families.saliency import metrics as sm
from vislab.families.saliency.data import (
    CachedFixationDecode,
    FixationDecode,
    center_bias,
    fixation_array,
    read_fixations,
)
from vislab.families.saliency.schema import SaliencyConfig
from vislab.models.backbone_config import resolved_normalisation
from vislab.models.backbones import Backbone, build_backbone, configured_backbone
from vislab.models.base import VislabModule
from vislab.models.figures import log_figure
from vislab.models.pretrained import describe_weights
from vislab.models.registry import register_builder


class GaussianBlur(nn.Module):
    """Separable Gaussian blur with a learned width; the kernel support is fixed (traceable, exportable)."""

    def __init__(self, sigma: float, max_sigma: float, width: int):
        super().__init__()
        self.width = width
        self.max_sigma = max_sigma
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))  # sigma as a fraction of the width
        self.radius = max(1, math.ceil(3 * max_sigma * width))

    def sigma_cells(self) -> torch.Tensor:
        return self.log_sigma.exp().clamp(max=self.max_sigma) * self.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, h, w) -> (B, 1, h, w)
        t = torch.arange(-self.radius, self.radius + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / self.sigma_cells()) ** 2)
        k = k / k.sum()
        r = self.radius
        x = F.pad(x, (r, r, r, r), mode="replicate")  # zero padding would darken the borders
        return F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))


class SaliencyModel(nn.Module):
    """Normalised image (B, 3, H, W) -> log fixation density (B, h, w), logsumexp over cells = 0."""

    log_center_bias: torch.Tensor

    def __init__(self, backbone: str, layers: list[str], readout_channels: list[int], image_size: list[int],
                 density_size: list[int], blur_sigma: float = 0.035, max_blur_sigma: float = 0.12,
                 center_bias_weight: float = 1.0, feature_dropout: float = 0.0,
                 pretrained: Backbone | None = None):
        super().__init__()
        source = pretrained if pretrained is not None else build_backbone(backbone)
        self.features = source.feature_extractor(layers, frozen=True, input_size=min(image_size))
        channels = [self.features.channels[layer] for layer in layers]
        self.norms = nn.ModuleList(LayerNorm2d(c) for c in channels)  # per layer: comparable scales
        sizes = [sum(channels), *readout_channels, 1]
        convs: list[nn.Module] = [nn.Dropout2d(feature_dropout)] if feature_dropout > 0 else []
        for i, (cin, cout) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            convs.append(nn.Conv2d(cin, cout, 1))
            if i < len(sizes) - 2:
                convs.append(nn.Softplus())
        self.readout = nn.Sequential(*convs)
        self.density_size = (int(density_size[0]), int(density_size[1]))
        self.blur = GaussianBlur(blur_sigma, max_blur_sigma, self.density_size[1])
        self.center_bias_weight = nn.Parameter(torch.tensor(float(center_bias_weight)))
        h, w = self.density_size
        self.register_buffer("log_center_bias", torch.full((h, w), -math.log(h * w)))

    def set_center_bias(self, log_density: np.ndarray | torch.Tensor) -> None:
        self.log_center_bias.copy_(torch.as_tensor(log_density, dtype=torch.float32).view(self.density_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_readout(self.features(x))

    def forward_readout(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Frozen features (list of (B, C_l, H / s_l, W / s_l), the `layers` order) -> log density (B, h, w)."""
        finest = maps[int(np.argmax([m.shape[-1] for m in maps]))].shape[-2:]
        f = torch.cat([F.interpolate(norm(m), size=finest, mode="bilinear", align_corners=False)
                       for norm, m in zip(self.norms, maps, strict=True)], dim=1)
        s = self.readout(f)  # (B, 1, hf, wf)
        s = self.blur(F.interpolate(s, size=self.density_size, mode="bilinear", align_corners=False))
        s = s[:, 0] + self.center_bias_weight * self.log_center_bias  # (B, h, w)
        return torch.log_softmax(s.flatten(1), dim=1).view_as(s)


@register_builder("saliency_readout", lambda: (
    {"backbone": "efficientnet_lite0", "layers": ["_blocks.10", "_swish_1"], "readout_channels": [4, 2],
     "image_size": [64, 64], "density_size": [16, 16]},
    (torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)),)))
def build_saliency_model(**kwargs: Any) -> SaliencyModel:
    """The export `spec` builder (random backbone; the weights, centre bias included, are loaded after)."""
    return SaliencyModel(**kwargs)


# ------------------------------------------------------------------------------------ family hooks
def _pair(v: list[int]) -> tuple[int, int]:
    return int(v[0]), int(v[1])


def datamodule(cfg: SaliencyConfig) -> ShardDataModule:
    d = cfg.data
    sizes = (_pair(d.image_size), _pair(d.density_size))
    if not cfg.model.cache_features:
        return ShardDataModule(cfg, {"train": FixationDecode(*sizes, hflip=d.hflip), "eval": FixationDecode(*sizes)})
    root = feature_root(cfg)
    n = len(cfg.model.layers)
    decode: dict[str, Decode] = {"train": CachedFixationDecode(*sizes, hflip=d.hflip, num_layers=n),
                                 "eval": CachedFixationDecode(*sizes, num_layers=n, with_pixels=True)}
    return ShardDataModule(dataclasses.replace(cfg, data=dataclasses.replace(d, root=str(root))), decode)


def feature_root(cfg: SaliencyConfig) -> Path:
    """The frozen layers' features of every image (and of its mirror image, for training), computed once."""

    b, d = cfg.model.backbone, cfg.data
    mean, std = normalisation(cfg)
    spec = {"architecture": b.name, "weights": weights_identity(b.weights, cfg.seed), "key_map": dict(b.key_map),
            "layers": list(cfg.model.layers), "image_size": list(d.image_size), "mean": mean, "std": std,
            "features": "saliency-layers"}

    def compute() -> LayerFeatures:
        def extractor() -> nn.Module:
            bb = configured_backbone(b, num_classes=0, seed=cfg.seed)
            return bb.feature_extractor(list(cfg.model.layers), input_size=min(d.image_size))

        return LayerFeatures(_pair(d.image_size), extractor, mean, std, cfg.per_rank_eval_batch_size())

    return cached_features(d.root, cfg.model.feature_cache, spec, compute, rank=global_rank(),
                           timeout_s=cfg.trainer.ddp_timeout_s * 4)


@dataclass
class LayerFeatures:
    """Raw fixation samples of one shard -> float16 features per layer ('l<i>.npy'; training split also of
    the mirrored image, 'l<i>m.npy'), the fixations, and the image itself outside training (for the maps)."""

    image_size: tuple[int, int]
    extractor: Callable[[], nn.Module]
    mean: list[float]
    std: list[float]
    batch_size: int = 16
    _model: nn.Module | None = None

    @torch.inference_mode()
    def __call__(self, raw: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        if self._model is None:
            self._model = self.extractor().eval()
        decode = FixationDecode(self.image_size, (1, 1))
        out: list[dict[str, Any]] = []
        for i in range(0, len(raw), self.batch_size):
            chunk = raw[i:i + self.batch_size]
            x = normalise(torch.stack([decode.pixels(r) for r in chunk]), self.mean, self.std)  # (B, 3, H, W)
            views = {"": self._model(x)} | ({"m": self._model(x.flip(-1))} if split == "train" else {})
            for j, r in enumerate(chunk):
                sample: dict[str, Any] = {"__key__": r["__key__"], "fix.npy": fixation_array(r)}
                for suffix, maps in views.items():
                    sample.update({f"l{k}{suffix}.npy": m[j].to(torch.float16).numpy() for k, m in enumerate(maps)})
                if split != "train":
                    sample.update({k: r[k] for k in ("jpg", "jpeg", "png") if k in r})
                out.append(sample)
        return out


def normalisation(cfg: SaliencyConfig) -> tuple[list[float], list[float]]:
    return resolved_normalisation(cfg.data, describe_weights(cfg.model.backbone.name, cfg.model.backbone.weights))


def model_spec(cfg: SaliencyConfig, meta: dict[str, Any]) -> dict[str, Any]:
    m, d = cfg.model, cfg.data
    return {"builder": "saliency_readout", "kwargs": {
        "backbone": m.backbone.name, "layers": list(m.layers), "readout_channels": list(m.readout_channels),
        "image_size": list(d.image_size), "density_size": list(d.density_size), "blur_sigma": m.blur_sigma,
        "max_blur_sigma": m.max_blur_sigma, "center_bias_weight": m.center_bias_weight,
        "feature_dropout": m.feature_dropout}}


def export_info(cfg: SaliencyConfig, meta: dict[str, Any]) -> dict[str, Any]:
    mean, std = meta.get("mean") or normalisation(cfg)[0], meta.get("std") or normalisation(cfg)[1]
    return {"architecture": f"deepgaze2-{cfg.model.backbone.name}", "input_size": [3, *cfg.data.image_size],
            "output": f"log fixation density (B, {cfg.data.density_size[0]}, {cfg.data.density_size[1]}), "
                      "logsumexp over cells = 0",
            "mean": mean, "std": std, "preprocess": {"resize": list(cfg.data.image_size), "scale": "pixels / 255"},
            "center_bias": meta.get("center_bias", {}), "backbone_weights": meta.get("weights", {}).get("source"),
            "backbone_provenance": meta.get("weights", {}).get("provenance", [])}


def example_input(cfg: SaliencyConfig, info: dict[str, Any], batch_size: int) -> torch.Tensor:
    """First validation images (never cached features), normalised as the model expects."""
    decode = FixationDecode(_pair(cfg.data.image_size), _pair(cfg.data.density_size))
    dm = ShardDataModule(cfg, {"train": decode, "eval": decode})
    batch = next(iter(dm.eval_loader("val" if "val" in dm.dirs else dm.test_split, rank=0, world_size=1)))
    return normalise(batch["pixels"][:batch_size], info["mean"], info["std"])


def module(cfg: SaliencyConfig, meta: dict[str, Any]) -> SaliencyModule:
    """The module, with the centre bias estimated from the training split's fixations."""
    log_cb, info = center_bias(read_fixations(f"{cfg.data.root}/train"), _pair(cfg.data.density_size),
                               list(cfg.data.center_bias_bandwidths), seed=cfg.seed)
    return SaliencyModule(cfg, {**meta, "center_bias": info}, log_cb)


class SaliencyModule(VislabModule):
    model: SaliencyModel
    def __init__(self, cfg: SaliencyConfig, meta: dict[str, Any] | None = None,
                 log_center_bias: np.ndarray | None = None):
        super().__init__(cfg, meta)
        b = cfg.model.backbone
        pretrained = configured_backbone(b, num_classes=0, seed=cfg.seed)
        self.model = SaliencyModel(**model_spec(cfg, self.meta)["kwargs"], pretrained=pretrained)
        if log_center_bias is not None:
            self.model.set_center_bias(log_center_bias)
        mean, std = normalisation(cfg)
        self.meta.update({"weights": pretrained.meta.to_dict(), "mean": mean, "std": std})
        self.normalise = PixelNormalise(mean, std, cfg.trainer.channels_last)
        names = ["nll", "ig", "ll", "auc", "nss", "ll_cb", "auc_cb", "nss_cb"]
        self.metrics = nn.ModuleDict({s: nn.ModuleDict({n: MeanMetric() for n in names}) for s in ("val", "test")})
        self._examples: dict[str, torch.Tensor] = {}

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        if "features" not in batch:  # uint8 (B, 3, H, W) pixels -> normalised images
            batch["image"] = self.normalise(batch["pixels"])
        return batch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _log_density(self, batch: dict[str, Any]) -> torch.Tensor:
        if "features" in batch:  # fast path: cached frozen features
            return self.model.forward_readout(batch["features"])
        return self.model(batch["image"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        log_p = self._log_density(batch)
        loss = sm.nll_loss(log_p, batch["fixations"])
        cb = self.model.log_center_bias
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/ig", sm.information_gain(log_p.detach(), cb, batch["fixations"]).mean())
        self.log("train/blur_sigma", self.model.blur.sigma_cells().detach() / self.model.density_size[1])
        self.log("train/center_bias_weight", self.model.center_bias_weight.detach())
        return loss

    def _eval_step(self, batch: dict[str, Any], split: str) -> None:
        log_p, counts = self._log_density(batch), batch["fixations"]
        cb = self.model.log_center_bias.expand_as(log_p)
        n = counts.flatten(1).sum(1)
        values = {"nll": -sm.per_fixation_mean(log_p, counts),
                  "ig": sm.information_gain(log_p, cb, counts), "ll": sm.log_likelihood(log_p, counts),
                  "auc": sm.auc(log_p, counts), "nss": sm.nss(log_p.exp(), counts),
                  "ll_cb": sm.log_likelihood(cb, counts), "auc_cb": sm.auc(cb, counts),
                  "nss_cb": sm.nss(cb.exp(), counts)}
        metrics: Any = self.metrics[split]
        for name, v in values.items():
            metrics[name].update(v, n)  # per-fixation means over the whole split
        if split == "val" and not self._examples and "pixels" in batch:
            k = min(4, len(log_p))
            self._examples = {"pixels": batch["pixels"][:k].cpu(), "log_p": log_p[:k].cpu(),
                              "counts": counts[:k].cpu()}

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self._examples and not self.trainer.sanity_checking:
            log_saliency_images(self, self._examples, step=self.global_step)
        self._examples = {}


def render(pixels: torch.Tensor, log_p: torch.Tensor, counts: torch.Tensor) -> np.ndarray:
    """(H, 2W, 3) uint8: the image with its fixations | the predicted density over the image."""
    from matplotlib import colormaps  # matplotlib: only when a figure is drawn

    image = pixels.permute(1, 2, 0).numpy().astype(np.float32) / 255.0  # (H, W, 3)
    size = image.shape[:2]
    p = F.interpolate(log_p.exp()[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    heat = colormaps["magma"](p / max(float(p.max()), 1e-12))[..., :3]
    overlay = 0.4 * image + 0.6 * heat
    marked = image.copy()
    rows, cols = np.nonzero(counts.numpy())
    scale = (size[0] / counts.shape[0], size[1] / counts.shape[1])
    for r, c in zip(rows, cols, strict=True):  # one red square per fixated cell
        y, x = int((r + 0.5) * scale[0]), int((c + 0.5) * scale[1])
        marked[max(0, y - 2):y + 3, max(0, x - 2):x + 3] = (1.0, 0.1, 0.1)
    return (np.concatenate([marked, overlay], axis=1) * 255).astype(np.uint8)


def log_saliency_images(module: Any, examples: dict[str, torch.Tensor], step: int) -> None:
    """A few validation images with their fixations | the predicted density: wandb, TensorBoard, figures/."""
    if module.global_rank != 0 or not module.loggers:
        return
    images = [render(examples["pixels"][i], examples["log_p"][i], examples["counts"][i])
              for i in range(len(examples["pixels"]))]
    log_figure(module, "val/saliency", images, step=step, caption="fixations | predicted density")
