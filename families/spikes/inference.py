"""Spike inference on whole recordings at their own frame rate: the one pipeline behind validation, test,
`vislab infer` and the benchmark.

    (N, T) dF/F at f  --split at NaN-->  finite stretches  --resample to the model rate F-->  network
    (all members, trace or window mode)  --clamp >= 0-->  spikes per F-frame  --rebin to f-->  (N, T)

The network's noise-level and rate inputs are the stretch's neuron nu (measured on the whole trace at f,
CASCADE's `calculate_noise_levels`) and f itself. Frames whose window is incomplete (the first and last
half-window of every stretch, NaN gaps) are NaN in the output.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Literal, TypeAlias

import numpy as np
import torch

from vislab.core.progress import Progress
from vislab.families.spikes.calcium import (
    finite_stretches,
    noise_level,
    num_resampled,
    rebin_counts,
    resample_trace,
)
from vislab.families.spikes.networks import SpikeCNN, conditions, net_input, windows_of
from vislab.families.spikes.stm import STM

Mode = Literal["trace", "window"]
SpikeNet: TypeAlias = SpikeCNN | STM


def min_frames(net: SpikeNet, frame_rate: float, model_rate: float) -> int:
    """Shortest stretch (frames at `frame_rate`) that yields at least one prediction."""
    return int(math.ceil(net.receptive_field * frame_rate / model_rate)) + 1


@torch.no_grad()
def run_network(net: SpikeNet, traces: np.ndarray, cond: torch.Tensor | None, mode: Mode = "trace",
                max_frames: int = 2**16) -> np.ndarray:
    """(B, m) traces at the model rate -> (B, E, m) spikes per frame (NaN where the window is incomplete).

    Rows are processed in chunks of about `max_frames` input frames (window mode: windows x window): small
    chunks keep the activations in cache (faster on CPU than one huge batch) and bound the memory."""
    device = next(net.parameters()).device
    b, m = traces.shape
    rf, e = net.receptive_field, net.ensemble_size
    out = np.full((b, e, m), np.nan, dtype=np.float32)
    if m < rf:
        return out
    per_row = m * (rf if mode == "window" else 1)
    step = max(1, max_frames // per_row)
    for i in range(0, b, step):
        x = torch.from_numpy(traces[i:i + step].astype(np.float32)).to(device)
        c = cond[i:i + step].to(device) if cond is not None else None
        inp = net_input(x, c)  # (b', C, m)
        if mode == "trace":
            y = net.forward_trace(inp)  # (b', E, m - rf + 1)
        else:
            y = net.forward_windows(windows_of(inp, rf)).view(inp.shape[0], m - rf + 1, e).transpose(1, 2)
        out[i:i + step, :, net.centre:net.centre + m - rf + 1] = torch.clamp(y, min=0).float().cpu().numpy()
    return out


def infer(net: SpikeNet, traces: np.ndarray, frame_rate: float, model_rate: float, *,
          noise_levels: np.ndarray | None = None, mode: Mode = "trace", members: bool = False,
          max_frames: int = 2**16, progress: Progress | None = None) -> np.ndarray:
    """(N, T) dF/F at `frame_rate` -> (N, T) spikes per frame, the ensemble mean; NaN where undefined.

    With `members`, (N, 1 + E, T): the mean first, then every ensemble member. Stretches of equal length
    are batched, a few at a time (about 1 M frames), so memory stays bounded for any number of neurons.
    `progress` counts the frames inferred (vislab infer's progress lines); its total is set here.
    """
    n, t = traces.shape
    nu = noise_level(traces, frame_rate) if noise_levels is None else np.asarray(noise_levels, dtype=np.float64)
    out = np.full((n, 1 + net.ensemble_size, t), np.nan, dtype=np.float32)
    groups: dict[int, list[tuple[int, int]]] = defaultdict(list)  # stretch length -> (neuron, start)
    for i in range(n):
        for a, b in finite_stretches(traces[i], min_length=min_frames(net, frame_rate, model_rate)):
            groups[b - a].append((i, a))
    if progress is not None:
        progress.total = sum(length * len(where) for length, where in groups.items())
    for length, where in groups.items():
        per_chunk = max(1, 2**20 // length)
        for c in range(0, len(where), per_chunk):
            chunk = where[c:c + per_chunk]
            rows = np.stack([traces[i, a:a + length] for i, a in chunk]).astype(np.float64)
            back = _infer_rows(net, rows, np.array([nu[i] for i, _ in chunk]), frame_rate, model_rate, mode, max_frames)
            for (i, a), r in zip(chunk, back, strict=True):
                out[i, :, a:a + length] = r
            if progress is not None:
                progress.update(len(chunk) * length)
    return out if members else out[:, 0]


def _infer_rows(net: SpikeNet, rows: np.ndarray, nu: np.ndarray, frame_rate: float, model_rate: float, mode: Mode,
                max_frames: int) -> np.ndarray:
    """(k, length) finite stretches -> (k, 1 + E, length) spikes per frame at `frame_rate`."""
    length = rows.shape[-1]
    m = num_resampled(length, frame_rate, model_rate)
    cond = None
    if net.conditioned:
        nus = torch.tensor(np.where(np.isfinite(nu), nu, 1.0), dtype=torch.float32)
        cond = conditions(nus, torch.full_like(nus, frame_rate), model_rate)
    rates = run_network(net, resample_trace(rows, frame_rate, model_rate), cond, mode, max_frames)  # (k, E, m)
    rates = np.concatenate([rates.mean(axis=1, keepdims=True), rates], axis=1)
    return rebin_counts(rates[..., :m], model_rate, frame_rate, num_out=length)
