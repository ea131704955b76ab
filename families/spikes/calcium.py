"""Calcium-trace signal operations shared by training, evaluation and `vislab infer` (numpy/scipy only).

Conventions: a trace `x` of `n` frames at `frame_rate` f has frame k centred at t0 + k/f; frame k is the
bin [t0 + (k - 1/2)/f, t0 + (k + 1/2)/f). Spike counts of a frame are the spikes inside its bin (CASCADE's
`calibrated_ground_truth_artificial_noise` bins them the same way). Resampling keeps the first bin's left
edge, so a trace and its resampled copy cover the same time span.

The standardized noise level nu (Rupprecht et al. 2021, CASCADE) is median(|diff(dF/F)|) / sqrt(f) * 100:
for white noise it does not change when frames are averaged or the rate changes, so one number describes a
recording's noise at any frame rate.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.ndimage import gaussian_filter1d

# median(|N(0, 2 s^2)|) = 0.6745 * sqrt(2) * s: the median |frame-to-frame difference| of white noise of std s
MEDIAN_ABS_DIFF_PER_STD = 0.6745 * math.sqrt(2.0)


def noise_level(traces: np.ndarray, frame_rate: float) -> np.ndarray:
    """CASCADE's standardized noise level nu in % per sqrt(Hz); (..., T) -> (...). NaN frames are ignored."""
    traces = np.asarray(traces)
    diffs = np.abs(np.diff(traces if traces.dtype.kind == "f" else traces.astype(np.float64), axis=-1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN; callers name those neurons
        return np.nanmedian(diffs, axis=-1).astype(np.float64) / math.sqrt(frame_rate) * 100.0


def noise_std_for_level(nu: float | np.ndarray, frame_rate: float) -> float | np.ndarray:
    """Per-frame std of white Gaussian noise whose noise level is `nu` at `frame_rate` (inverse of noise_level)."""
    return np.asarray(nu) / 100.0 * math.sqrt(frame_rate) / MEDIAN_ABS_DIFF_PER_STD


def finite_stretches(x: np.ndarray, min_length: int = 1) -> list[tuple[int, int]]:
    """[start, stop) index ranges of the runs of finite values of a 1-D array, at least `min_length` long."""
    good = np.isfinite(x).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], good, [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= min_length]


def num_resampled(n: int, frame_rate: float, target_rate: float) -> int:
    """Frames of the resampled trace: whole target bins inside the original span (n / f seconds)."""
    return int(math.floor(n * target_rate / frame_rate + 1e-9))


def resample_trace(x: np.ndarray, frame_rate: float, target_rate: float) -> np.ndarray:
    """Resample (..., n) finite traces to `target_rate`: (..., num_resampled(n, f, target_rate)).

    Downsampling averages the frames each target bin overlaps, weighted by the overlap (what a slower
    camera integrating the same light would record; the noise level nu of white noise is unchanged).
    Upsampling interpolates linearly at the target bin centres. Both are local (an artefact spans at most
    one frame), so short training pieces and NaN-split stretches are resampled without the edge ringing of
    `scipy.signal.resample` / `resample_poly`, and training and inference use the very same operation.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    m = num_resampled(n, frame_rate, target_rate)
    if abs(target_rate - frame_rate) < 1e-9 * frame_rate:
        return x[..., :m].copy()
    if target_rate > frame_rate:
        centres = (np.arange(m) + 0.5) * (frame_rate / target_rate) - 0.5  # in input frames from frame 0's centre
        return _interp(x, centres) if m else np.zeros((*x.shape[:-1], 0))
    return rebin_counts(x, frame_rate, target_rate, num_out=m) * (target_rate / frame_rate)


def _interp(y: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of (..., n) samples at fractional indices (clamped to the ends), vectorised over rows."""
    n = y.shape[-1]
    p = np.clip(positions, 0.0, n - 1)
    lo = np.minimum(np.floor(p).astype(np.int64), max(n - 2, 0))
    w = p - lo
    hi = np.minimum(lo + 1, n - 1)
    return y[..., lo] * (1.0 - w) + y[..., hi] * w


def rebin_counts(counts: np.ndarray, frame_rate: float, target_rate: float, num_out: int | None = None) -> np.ndarray:
    """Spikes per frame at `frame_rate` -> spikes per frame at `target_rate`, conserving the spike count.

    Spikes are spread uniformly within each input bin; the cumulative count is read at the output bin edges.
    NaN input bins make every output bin they touch NaN. (..., n) -> (..., num_out).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.shape[-1]
    m = num_resampled(n, frame_rate, target_rate) if num_out is None else num_out
    edges = np.arange(m + 1) * (frame_rate / target_rate)  # in input-bin units from the first left edge
    bad = ~np.isfinite(counts)
    cum = np.concatenate([np.zeros((*counts.shape[:-1], 1)), np.cumsum(np.where(bad, 0.0, counts), axis=-1)], axis=-1)
    out = np.diff(_interp(cum, edges), axis=-1)
    if bad.any():
        cum_bad = np.concatenate([np.zeros((*counts.shape[:-1], 1)), np.cumsum(bad, axis=-1)], axis=-1)
        lo = np.clip(np.floor(edges[:-1]).astype(np.int64), 0, n)
        hi = np.clip(np.ceil(edges[1:]).astype(np.int64), 0, n)
        touched = (cum_bad[..., hi] - cum_bad[..., lo]) > 0
        out[touched] = np.nan
    out[..., edges[1:] > n + 1e-9] = np.nan  # output bins reaching past the input's end
    return out


def bin_spikes(spike_times: np.ndarray, t0: float, frame_rate: float, num_frames: int) -> np.ndarray:
    """Spike counts per frame for frames centred at t0 + k/f, k < num_frames (the bin convention above)."""
    edges = t0 + (np.arange(num_frames + 1) - 0.5) / frame_rate
    counts, _ = np.histogram(np.asarray(spike_times, dtype=np.float64), bins=edges)
    return counts.astype(np.float64)


def smooth_counts(counts: np.ndarray, sigma_s: float, frame_rate: float) -> np.ndarray:
    """Gaussian-smoothed spike counts (the CASCADE training target); sigma in seconds, 0 = unsmoothed."""
    if sigma_s <= 0:
        return np.asarray(counts, dtype=np.float64)
    return gaussian_filter1d(np.asarray(counts, dtype=np.float64), sigma_s * frame_rate, axis=-1, mode="constant")


def add_matched_noise(x: np.ndarray, frame_rate: float, nu_now: float, nu_target: float,
                      rng: np.random.Generator, shot_noise: bool = True) -> np.ndarray:
    """Add Gaussian noise so that a trace of noise level `nu_now` reaches `nu_target` (noise-matched training).

    Independent noise adds in quadrature. As in CASCADE, the added noise is scaled by sqrt(|1 + dF/F|)
    (normalised to median 1) when `shot_noise`: photon shot noise grows with the fluorescence.
    """
    if nu_target <= nu_now:
        return x
    std = float(noise_std_for_level(math.sqrt(nu_target**2 - nu_now**2), frame_rate))
    scale = np.ones_like(x)
    if shot_noise:
        scale = np.sqrt(np.abs(1.0 + x))
        scale /= max(float(np.median(scale)), 1e-6)
    return x + rng.normal(0.0, std, size=x.shape) * scale
