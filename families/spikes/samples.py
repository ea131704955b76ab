"""Loader-side steps of the spikes family: noise-matched, rate-augmented training crops; whole recordings.

Training (`PieceDecode`, in loader workers, fresh randomness every epoch). From a stored piece of a ground-
truth recording at its own frame rate f:
  1. with probability `rate_augment`, average it down to a random slower rate f' in [rate_min, model rate]
     (a slower recording of the same neuron);
  2. add Gaussian noise to reach a target noise level nu drawn log-uniformly in [noise_min, noise_max]
     (CASCADE's noise matching, `calibrated_ground_truth_artificial_noise`; never below the recording's own);
  3. resample to the model's rate F exactly as `vislab infer` does (data.calcium.resample_trace);
  4. crop `segment_frames + window - 1` frames at a random offset; the target is the spike counts of the
     `segment_frames` centre frames on the F grid, Gaussian-smoothed (sigma `smoothing_s`), with a mask
     that is 0 where the piece was too short.
The network is told the nu and f' it was given (conditioning), the same numbers `vislab infer` measures.

Evaluation (`RecordingDecode`): a whole recording at its own rate, left as numpy for the inference pipeline.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vislab.data.manifest import ShardError
from vislab.families.spikes.calcium import add_matched_noise, bin_spikes, resample_trace, smooth_counts


def read_npy(sample: dict[str, Any], name: str) -> np.ndarray:
    data = sample.get(name)
    if data is None:
        raise ShardError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no '{name}' field")
    return np.load(io.BytesIO(data), allow_pickle=False) if isinstance(data, bytes) else np.asarray(data)


def read_info(sample: dict[str, Any]) -> dict[str, Any]:
    data = sample.get("json")
    if data is None:
        raise ShardError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no 'json' field")
    return json.loads(data) if isinstance(data, bytes | str) else dict(data)


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high)))) if high > low else float(low)


@dataclass
class PieceDecode:
    """Picklable training decode: stored piece -> {'trace', 'cond', 'target', 'counts', 'mask'} (see above)."""

    model_rate: float
    window: int
    segment_frames: int
    smoothing_s: float
    noise_min: float
    noise_max: float
    shot_noise: bool = True
    rate_augment: float = 0.5
    rate_min: float = 5.0

    @property
    def input_frames(self) -> int:
        return self.segment_frames + self.window - 1

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        # drawn from torch's generator, which the training stream seeds per (seed, epoch, rank, batch): a
        # resumed epoch gets the same noise and crops as an uninterrupted one
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,))))
        x = read_npy(sample, "trace.npy").astype(np.float64)
        spikes = read_npy(sample, "spikes.npy")
        info = read_info(sample)
        rate, nu = float(info["frame_rate"]), float(info["noise_level"])
        if not math.isfinite(nu):
            nu = 0.0
        span_left = -0.5 / rate  # left edge of frame 0, in the piece's time (frame 0 centred at 0)
        if rng.uniform() < self.rate_augment and rate > self.rate_min:
            slow = log_uniform(rng, self.rate_min, min(rate, self.model_rate))
            x, rate = resample_trace(x, rate, slow), slow
        target_nu = log_uniform(rng, self.noise_min, self.noise_max)
        x = add_matched_noise(x, rate, nu, target_nu, rng, self.shot_noise)
        nu = max(nu, target_nu)
        xf = resample_trace(x, rate, self.model_rate)  # (m,) at the model rate
        return self._crop(xf, spikes, span_left, rate, nu, rng)

    def _crop(self, xf: np.ndarray, spikes: np.ndarray, span_left: float, rate: float, nu: float,
              rng: np.random.Generator) -> dict[str, Any]:
        f, n_in, seg, centre = self.model_rate, self.input_frames, self.segment_frames, self.window // 2
        edge = int(math.ceil(f / rate))  # resampling touches at most one source frame at each end
        usable = max(0, len(xf) - 2 * edge)
        start = edge + (int(rng.integers(0, usable - n_in + 1)) if usable > n_in else 0)
        crop = xf[start:start + min(n_in, usable)]
        valid = max(0, len(crop) - self.window + 1)  # outputs whose whole window lies in the piece
        trace = np.zeros(n_in, dtype=np.float32)
        trace[: len(crop)] = crop
        # target frames: F-grid frames start + centre + j, j < seg, centred at span_left + (k + 0.5) / f
        pad = int(math.ceil(4 * self.smoothing_s * f)) + 1
        first = start + centre - pad
        counts = bin_spikes(spikes, span_left + (first + 0.5) / f, f, seg + 2 * pad)
        smooth = smooth_counts(counts, self.smoothing_s, f)[pad:pad + seg]
        mask = np.zeros(seg, dtype=np.float32)
        mask[: min(valid, seg)] = 1.0
        return {
            "trace": torch.from_numpy(trace),
            "cond": torch.tensor([nu, rate], dtype=torch.float32),
            "target": torch.from_numpy((smooth * mask).astype(np.float32)),
            "counts": torch.from_numpy((counts[pad:pad + seg] * mask).astype(np.float32)),
            "mask": torch.from_numpy(mask),
        }


@dataclass
class RecordingDecode:
    """Picklable evaluation decode: a whole recording, as numpy, with its ids."""

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        info = read_info(sample)
        return {"trace": read_npy(sample, "trace.npy").astype(np.float64), "spikes": read_npy(sample, "spikes.npy"),
                **info}


def collate_recordings(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Recordings differ in length: a batch is a list of them."""
    return {"recordings": samples}
