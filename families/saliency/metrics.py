"""Fixation-prediction metrics of a log-density on a grid, per image, as used by the saliency benchmarks.

All take `log_density` (B, h, w) (log-probabilities of the grid cells, logsumexp = 0 per image) or any
saliency map, and `counts` (B, h, w): how many fixations fell in each cell. Each returns per-image values
(B,) that are averages over that image's fixations; average them over images weighted by `counts.sum()`
to get per-fixation means (pysaliency's `average='fixations'`).

- information gain over a baseline, bits/fixation (Kümmerer, Wallis & Bethge 2015, PNAS 112:16054):
  mean over fixations of log2 p_model(x) - log2 p_baseline(x);
- log-likelihood, bits/fixation relative to a uniform density: mean of log2 p(x) + log2(h*w);
- AUC with all pixels as negatives: mean over fixations of the fraction of cells whose saliency is lower
  (ties count one half);
- NSS (Peters et al. 2005): the map standardised per image (mean 0, std 1), averaged at the fixations.
"""

from __future__ import annotations

import math

import torch


def per_fixation_mean(values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(B, h, w) values at cells, weighted by fixation counts -> (B,) per-image means (0 for no fixations)."""
    n = counts.flatten(1).sum(1)
    return (values * counts).flatten(1).sum(1) / n.clamp(min=1)


def information_gain(log_density: torch.Tensor, log_baseline: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bits per fixation gained over `log_baseline` (h, w) or (B, h, w)."""
    return per_fixation_mean(log_density - log_baseline, counts) / math.log(2)


def log_likelihood(log_density: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bits per fixation relative to the uniform density on the grid."""
    h, w = log_density.shape[-2:]
    return per_fixation_mean(log_density, counts) / math.log(2) + math.log2(h * w)


def auc(saliency: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of fixated cells (positives) against all cells (negatives)."""
    flat = saliency.flatten(1).contiguous()  # (B, h*w)
    ordered = flat.sort(dim=1).values
    below = torch.searchsorted(ordered, flat, right=False)
    not_above = torch.searchsorted(ordered, flat, right=True)
    rank = (below + 0.5 * (not_above - below)).to(flat.dtype) / flat.shape[1]  # (B, h*w)
    return per_fixation_mean(rank.view_as(saliency), counts)


def nss(saliency: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Normalised scanpath saliency (population standard deviation, as numpy's default)."""
    flat = saliency.flatten(1)
    z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, unbiased=False, keepdim=True).clamp(min=1e-12)
    return per_fixation_mean(z.view_as(saliency), counts)


def nll_loss(log_density: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood in nats per fixation over the whole batch (the training loss)."""
    return -(log_density * counts).sum() / counts.sum().clamp(min=1)
