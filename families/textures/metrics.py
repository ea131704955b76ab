"""The papers' evaluation of a synthesis, on a feature network other than the one that synthesised.

A good texture is as close to its source, in Gram statistics, as two crops of the source are to each other
(Gatys et al. 2015; Ustyuzhaninov et al. 2016 compare patches of the same and of different textures). For
each result: Gram distance result-vs-source, crop-vs-crop (two non-overlapping crops of the source),
crop-vs-source, init-vs-source and result-vs-init (so that a good score is not just the start's), and
source-vs-source (to the other sources of the run, when there are several). Distances are the symmetric
relative Gram distance averaged over the evaluation layers (per layer too).

Protocol: Gram matrices are normalised by the number of positions (`losses.gram`), so images of different
sizes are comparable; the result is compared with the source's centre square at the result's size (the
image whose statistics it was given, as in Ustyuzhaninov et al.'s evaluate_quality.py); the crops are the
largest non-overlapping pair of the source at its own scale.
"""

from __future__ import annotations

from statistics import mean

import torch
import torch.nn.functional as F

from vislab.families.textures.features import BackboneFeatures
from vislab.families.textures.losses import gram, symmetric_gram_distance
from vislab.families.textures.schema import TexturesEvalConfig, TexturesModelConfig

Distances = dict[str, float]


def centre_square(image: torch.Tensor, side: int) -> torch.Tensor:
    """Centre square of (1, C, H, W) resized to side x side (a pure crop when the shorter side is `side`)."""
    h, w = image.shape[-2:]
    k = min(h, w)
    crop = image[..., (h - k) // 2:(h - k) // 2 + k, (w - k) // 2:(w - k) // 2 + k]
    if k == side:
        return crop
    return F.interpolate(crop, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def two_crops(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two non-overlapping square crops of (1, C, H, W): side min(short, long // 2), opposite corners."""
    h, w = image.shape[-2:]
    side = min(min(h, w), max(h, w) // 2)
    return image[..., :side, :side], image[..., h - side:, w - side:]


class GramEvaluator:
    """Gram matrices of images on the evaluation network, and distances between them."""

    def __init__(self, cfg: TexturesEvalConfig):
        assert cfg.network is not None
        model = TexturesModelConfig(network=cfg.network, weights=cfg.weights, layers=list(cfg.layers), pooling="max")
        self.net = BackboneFeatures(model, list(cfg.layers), key="eval.layers").eval().requires_grad_(False)
        self.layers = list(cfg.layers)

    @torch.no_grad()
    def grams(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(1, 3, H, W) in [0, 1] -> {layer: (1, C, C)}."""
        return {k: gram(v) for k, v in self.net(image).items()}

    def distance(self, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> Distances:
        per_layer = {k: float(symmetric_gram_distance(a[k], b[k])[0]) for k in self.layers}
        return {"mean": mean(per_layer.values()), **per_layer}

    def evaluate(self, result: torch.Tensor, source: torch.Tensor, init: torch.Tensor | None = None,
                 others: list[torch.Tensor] | None = None) -> dict[str, Distances]:
        """Distances of one result (1, 3, S, S) to its source (1, 3, H, W), its start and the references."""
        side = result.shape[-1]
        g_src, g_res = self.grams(centre_square(source, side)), self.grams(result)
        crop_a, crop_b = (self.grams(c) for c in two_crops(source))
        out = {
            "result_vs_source": self.distance(g_res, g_src),
            "crop_vs_crop": self.distance(crop_a, crop_b),
            "crop_vs_source": _average(self.distance(crop_a, g_src), self.distance(crop_b, g_src)),
        }
        if init is not None:
            g_init = self.grams(init.clamp(0, 1))
            out["init_vs_source"] = self.distance(g_init, g_src)
            out["result_vs_init"] = self.distance(g_res, g_init)
        if others:
            dists = [self.distance(g_src, self.grams(centre_square(o, side))) for o in others]
            out["source_vs_source"] = {k: mean(d[k] for d in dists) for k in dists[0]}
        return out


def _average(a: Distances, b: Distances) -> Distances:
    return {k: (a[k] + b[k]) / 2 for k in a}
