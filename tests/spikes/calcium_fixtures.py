"""Tiny ground-truth fixtures in the CASCADE layout, written inside the tests (no shared data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import savemat


def _cattached(recordings: list[dict]) -> np.ndarray:
    dtype = [("fluo_time", object), ("fluo_mean", object), ("events_AP", object)]
    arr = np.zeros((1, len(recordings)), dtype=dtype)
    for i, r in enumerate(recordings):
        arr[0, i] = (r["fluo_time"], r["fluo_mean"], r["events_AP"])
    return arr


def _recording(rng: np.random.Generator, rate: float, seconds: float, gap: bool = False) -> dict:
    n = int(rate * seconds)
    t = np.arange(n) / rate + 0.3
    spikes = np.sort(rng.uniform(0.3, 0.3 + seconds, size=int(seconds)))
    x = rng.normal(0, 0.02, n) + sum(0.3 * np.exp(-(t - s) / 0.5) * (t >= s) for s in spikes)
    if gap:
        x[n // 2: n // 2 + 20] = np.nan
        t[n // 2: n // 2 + 20] = np.nan
    return {"fluo_time": t[:, None], "fluo_mean": x[:, None], "events_AP": (spikes * 1e4)[:, None]}


def write_cascade_tree(root: Path, datasets: dict[str, tuple[float, int]], seconds: float = 40.0) -> Path:
    """A tiny CASCADE-layout folder: datasets {name: (frame rate, neurons)}; neuron 0 has two recordings
    (one with a NaN gap), the others one (saved as a single struct, as MATLAB does)."""
    rng = np.random.default_rng(0)
    for name, (rate, neurons) in datasets.items():
        (root / name).mkdir(parents=True)
        for k in range(neurons):
            recs = [_recording(rng, rate, seconds), _recording(rng, rate, seconds, gap=True)] if k == 0 else \
                [_recording(rng, rate, seconds)]
            savemat(root / name / f"CAttached_cell{k}_mini.mat", {"CAttached": _cattached(recs)})
    return root
