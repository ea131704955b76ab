"""Spike traces for people: dF/F with the inferred rate (and, where known, the true spikes) per neuron.

Used by `vislab infer` (spikes.png beside the output) and by validation (`val/spikes` on wandb, TensorBoard
and in `<run_dir>/figures/`). matplotlib's Agg backend draws off-screen (Slurm nodes have no display).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def traces_figure(traces: list[np.ndarray], rates: list[np.ndarray], frame_rate: list[float], labels: list[str],
                  truth: list[np.ndarray] | None = None, seconds: float = 60.0, title: str = "") -> Any:
    """One row per neuron: dF/F (gray, left axis) and the inferred rate in spikes/s (red, right axis) over
    the first `seconds`; `truth` adds the true spike times (s) as ticks. `rates` are spikes per frame."""
    import matplotlib  # matplotlib: only when a figure is drawn

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # matplotlib: only when a figure is drawn

    fig, axes = plt.subplots(len(traces), 1, figsize=(10, 1.6 * len(traces) + 0.6), squeeze=False)
    for k, ax in enumerate(axes[:, 0]):
        rate = frame_rate[k]
        frames = min(len(traces[k]), int(seconds * rate))
        t = np.arange(frames) / rate
        ax.plot(t, traces[k][:frames], color="0.3", lw=0.8)
        ax.set_ylabel(f"{labels[k]}\ndF/F", fontsize=8)
        twin = ax.twinx()
        twin.plot(t, rates[k][:frames] * rate, color="tab:red", lw=0.9)
        twin.set_ylabel("spikes/s", color="tab:red", fontsize=8)
        if truth is not None:
            shown = truth[k][truth[k] < frames / rate]
            top = float(np.nanmax(rates[k][:frames] * rate)) if np.isfinite(rates[k][:frames]).any() else 1.0
            twin.plot(shown, np.full(len(shown), 1.05 * max(top, 1e-6)), "|", color="k", ms=6, label="true spikes")
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
