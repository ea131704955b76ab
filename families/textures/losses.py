"""Image statistics and loss terms of texture synthesis and style transfer; every term is per image, (B,).

Gram matrices (Gatys, Ecker & Bethge 2015): G_l = F_l F_l^T / M_l for the (C_l, M_l = h*w) feature map F_l,
optionally inside a spatial mask (Gatys et al. 2017, 'guided Gram matrices'). Distances are relative,
|G - A|_F^2 / |A|_F^2, so that layers of very different magnitude get comparable weights (the papers
normalise by 4 N_l^2 M_l^2 instead; the minimiser is the same, only the balance across layers differs).
Colour (Gatys, Bethge, Hertzmann & Shechtman 2016, 'Preserving color in neural artistic style transfer'):
YIQ luminance transfer and the linear colour-histogram matching of the style image to the content image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-12
# NTSC YIQ (Gatys et al. 2016 use YIQ for luminance-only transfer)
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def gram(features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, h, w) [and a (B or 1, 1, h, w) mask] -> (B, C, C), normalised by the (masked) number of positions."""
    f = features if mask is None else features * mask
    flat = f.flatten(2)  # (B, C, M)
    norm = flat.shape[-1] if mask is None else (mask.flatten(2) ** 2).sum(-1, keepdim=True).clamp_min(EPS)
    return flat @ flat.transpose(1, 2) / norm


def gram_distance(g: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative squared Frobenius distance |G - A|^2 / |A|^2 per image: (B, C, C) x (B|1, C, C) -> (B,)."""
    return ((g - target) ** 2).sum((1, 2)) / (target**2).sum((1, 2)).clamp_min(EPS)


def symmetric_gram_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|G_a - G_b|^2 / (|G_a| |G_b|): the evaluation metric (symmetric in its two images), (B,)."""
    num = ((a - b) ** 2).sum((1, 2))
    return num / (a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1)).clamp_min(EPS)


def content_distance(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|F - P|^2 / |P|^2 per image at the content layer: (B, C, h, w) -> (B,)."""
    return ((f - target) ** 2).flatten(1).sum(1) / (target**2).flatten(1).sum(1).clamp_min(EPS)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels, (B, C, H, W) -> (B,)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]) ** 2
    dw = (x[..., :, 1:] - x[..., :, :-1]) ** 2
    return dh.flatten(1).mean(1) + dw.flatten(1).mean(1)


def out_of_range(x: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the pixels to [0, 1], (B, C, H, W) -> (B,). Without it L-BFGS matches the
    Gram matrices with pixels far outside the valid range (-0.9 ... 2.1 seen), and the clamped image that is
    saved has a 10x larger loss than the one optimised."""
    return ((x - x.clamp(0, 1)) ** 2).flatten(1).mean(1)


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", RGB_TO_YIQ.to(x), x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(RGB_TO_YIQ).to(x), x)


def match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """Style luminance with the content luminance's mean and std (Gatys et al. 2016, eq. 1): (1, 1, H, W)."""
    return (style_y - style_y.mean()) * (content_y.std() / style_y.std().clamp_min(1e-6)) + content_y.mean()


def _sqrtm(cov: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    vals = vals.clamp_min(1e-8) ** (-0.5 if inverse else 0.5)
    return vecs @ torch.diag(vals) @ vecs.T


def match_color_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Style pixels linearly mapped to the content's colour mean and covariance (Gatys et al. 2016, the
    'image analogies' variant A = Sigma_c^1/2 Sigma_s^-1/2): (1, 3, H, W) in [0, 1]."""
    s, c = style.flatten(2)[0], content.flatten(2)[0]  # (3, N)
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    cov_s = torch.cov(s) + 1e-5 * torch.eye(3)
    cov_c = torch.cov(c) + 1e-5 * torch.eye(3)
    a = _sqrtm(cov_c) @ _sqrtm(cov_s, inverse=True)
    return (a @ (s - mu_s) + mu_c).reshape(style.shape).clamp(0, 1)


class Objective(nn.Module):
    """Gram targets per layer (and per region), optional content target, TV: (features, image) -> terms, each (B,).

    `style_grams[r][layer]` is region r's (B or 1, C, C) target; `masks[r]` the region's (B or 1, 1, H, W)
    mask on the synthesised image (None: the whole image). A batch of B independent images is one sum of B
    per-image losses, so each image's gradient depends on its own terms only.
    """

    def __init__(self, layers: Sequence[str], layer_weights: Sequence[float], style_grams: list[dict[str, torch.Tensor]],
                 masks: list[torch.Tensor | None], style_weight: float = 1.0, content_layer: str | None = None,
                 content_target: torch.Tensor | None = None, content_weight: float = 0.0, tv_weight: float = 0.0,
                 range_weight: float = 0.0):
        super().__init__()
        self.layers = list(layers)
        self.layer_weights = list(layer_weights) or [1.0] * len(self.layers)
        self.style_grams = [{k: v.detach() for k, v in g.items()} for g in style_grams]
        self.masks = masks
        self.style_weight = style_weight
        self.content_layer = content_layer
        self.content_target = None if content_target is None else content_target.detach()
        self.content_weight = content_weight
        self.tv_weight = tv_weight
        self.range_weight = range_weight

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]  # targets follow .to(device)
        self.style_grams = [{k: fn(v) for k, v in g.items()} for g in self.style_grams]
        self.masks = [None if m is None else fn(m) for m in self.masks]
        if self.content_target is not None:
            self.content_target = fn(self.content_target)
        return super()._apply(fn, recurse)

    def layer_distances(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Gram distance per layer (summed over regions), each (B,)."""
        out = {}
        for layer in self.layers:
            f = feats[layer]
            total = torch.zeros(f.shape[0], device=f.device)
            for targets, mask in zip(self.style_grams, self.masks, strict=True):
                m = None if mask is None else F.interpolate(mask, size=f.shape[-2:], mode="bilinear", align_corners=False)
                total = total + gram_distance(gram(f, m), targets[layer])
            out[layer] = total
        return out

    def forward(self, feats: dict[str, torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        dist = self.layer_distances(feats)
        terms = {"style": self.style_weight * sum(w * dist[k] for k, w in zip(self.layers, self.layer_weights, strict=True))}
        if self.content_layer is not None and self.content_target is not None:
            terms["content"] = self.content_weight * content_distance(feats[self.content_layer], self.content_target)
        if self.tv_weight:
            terms["tv"] = self.tv_weight * total_variation(image)
        if self.range_weight:
            terms["range"] = self.range_weight * out_of_range(image)
        return terms  # type: ignore[return-value]
