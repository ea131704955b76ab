"""Fixation samples: decoding into (image, fixation-count map) pairs, and the centre-bias density.

A sample (written by `vislab.families.saliency.importers.fixations`) holds the image (`jpg`/`png`), `fix.npy` float32
(N, 2) with x, y in [0, 1) (pixel centre / image size, origin top-left), `subject.npy` int16 (N,) and a
`json` with the original width and height. Decoding resizes the image to the backbone's input size and
bins the fixations on the density grid, so the likelihood of a fixation is the density of its grid cell.

The centre bias (Kümmerer et al. 2016) is a Gaussian kernel density estimate of all training fixations in
normalised image coordinates, mixed with a little uniform density; width and mixture weight are chosen by
the likelihood of held-out training images (k-fold over images), so it adapts to whatever data is given.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from vislab.data.images import decode_bytes, image_bytes
from vislab.data.manifest import ShardError, check_shard_set
from vislab.data.pipeline import _SkipStats, read_shard

FIXATIONS = "fix.npy"


def fixation_array(sample: dict[str, Any]) -> np.ndarray:
    """(N, 2) float32 normalised x, y of one raw sample."""
    if FIXATIONS not in sample:
        raise ShardError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no '{FIXATIONS}' field")
    fix = np.load(io.BytesIO(sample[FIXATIONS]), allow_pickle=False)
    return np.asarray(fix, dtype=np.float32).reshape(-1, 2)


def fixation_counts(fix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 number of fixations per grid cell; `fix` (N, 2) normalised x, y."""
    h, w = size
    col = np.clip((fix[:, 0] * w).astype(np.int64), 0, w - 1)
    row = np.clip((fix[:, 1] * h).astype(np.int64), 0, h - 1)
    return np.bincount(row * w + col, minlength=h * w).reshape(h, w).astype(np.float32)


def mirror(fix: np.ndarray) -> np.ndarray:
    """Fixations of the horizontally flipped image."""
    return np.stack([1.0 - fix[:, 0] - 1e-6, fix[:, 1]], axis=1)


@dataclass
class FixationDecode:
    """Picklable decode: {'pixels': uint8 (3, H, W), 'fixations': float32 (h, w) counts, 'key': str}."""

    image_size: tuple[int, int]
    density_size: tuple[int, int]
    hflip: bool = False
    _resize: Any = field(default=None, init=False, repr=False, compare=False)

    def pixels(self, sample: dict[str, Any]) -> torch.Tensor:
        if self._resize is None:
            self._resize = v2.Resize(list(self.image_size), antialias=True)
        return self._resize(decode_bytes(image_bytes(sample), where=f"{sample.get('__key__')} in {sample.get('__url__')}"))

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image, fix = self.pixels(sample), fixation_array(sample)
        if self.hflip and bool(torch.rand(()) < 0.5):  # torch RNG: seeded per batch by the training stream
            image, fix = image.flip(-1), mirror(fix)
        return {"pixels": image, "fixations": torch.from_numpy(fixation_counts(fix, self.density_size)),
                "key": sample["__key__"]}


@dataclass
class CachedFixationDecode(FixationDecode):
    """Decode of a feature-cache sample: {'features': [float32 (C_l, h_l, w_l)], 'fixations', 'key'}
    (+ 'pixels' when `with_pixels`, for the logged example maps). Training samples also hold the features
    of the mirrored image ('l<i>m.npy'), used when `hflip` draws a flip."""

    num_layers: int = 1
    with_pixels: bool = False

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        flip = self.hflip and bool(torch.rand(()) < 0.5)
        fix = fixation_array(sample)
        fix = mirror(fix) if flip else fix
        feats = [torch.from_numpy(np.load(io.BytesIO(sample[f"l{i}{'m' if flip else ''}.npy"])).astype(np.float32))
                 for i in range(self.num_layers)]
        out = {"features": feats, "fixations": torch.from_numpy(fixation_counts(fix, self.density_size)),
               "key": sample["__key__"]}
        if self.with_pixels:
            out["pixels"] = self.pixels(sample)
        return out


def read_fixations(shard_dir: str | Path) -> list[np.ndarray]:
    """The (N, 2) fixation arrays of every image of a shard set (images are not decoded)."""
    m = check_shard_set(shard_dir)
    out: list[np.ndarray] = []
    for url, s in zip(m.urls(shard_dir), m.shards, strict=True):
        out.extend(fixation_array(sample) for sample in read_shard(url, s.count, "raise", _SkipStats()))
    return out


def _smoothed(counts: np.ndarray, sigma_cells: float, uniform: float) -> np.ndarray:
    """A density on the grid (sums to 1): Gaussian-smoothed counts mixed with `uniform`."""
    from scipy.ndimage import gaussian_filter  # scipy: slow to import, only for this file format

    smooth = gaussian_filter(counts.astype(np.float64), sigma=sigma_cells, mode="nearest")
    smooth /= max(smooth.sum(), 1e-12)
    return (1.0 - uniform) * smooth + uniform / smooth.size


def center_bias(fixations: list[np.ndarray], size: tuple[int, int], bandwidths: list[float],
                uniform_weights: tuple[float, ...] = (1e-4, 1e-3, 0.01, 0.03, 0.1), folds: int = 5,
                seed: int = 0) -> tuple[np.ndarray, dict[str, float]]:
    """(log density (h, w) summing to 1 in probability, chosen settings) from training fixations.

    Bandwidths are fractions of the grid width; width and uniform weight maximise the k-fold held-out
    log-likelihood per fixation, then the density is estimated from all images with them."""
    if not fixations or sum(len(f) for f in fixations) == 0:
        raise ShardError("no training fixations to estimate the centre bias from")
    counts = [fixation_counts(f, size) for f in fixations]
    fold = np.random.default_rng(seed).permutation(len(counts)) % max(2, min(folds, len(counts)))
    total = np.sum(counts, axis=0)  # (h, w)
    held = {k: np.sum([c for c, f in zip(counts, fold, strict=True) if f == k], axis=0) for k in np.unique(fold)}
    best = (-np.inf, bandwidths[0], uniform_weights[0])
    for bw in bandwidths:
        for eps in uniform_weights:
            ll = sum(float((h * np.log(_smoothed(total - h, bw * size[1], eps))).sum()) for h in held.values())
            if ll / total.sum() > best[0]:
                best = (ll / float(total.sum()), bw, eps)
    density = _smoothed(total, best[1] * size[1], best[2])
    info = {"bandwidth": best[1], "uniform_weight": best[2], "heldout_ll_nats": best[0],
            "num_images": len(counts), "num_fixations": int(sum(c.sum() for c in counts))}
    return np.log(density).astype(np.float32), info
