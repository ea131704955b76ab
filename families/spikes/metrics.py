"""Ground-truth scores of spike inference, per neuron and per dataset (spikefinder / CASCADE conventions).

- correlation: Pearson correlation between the inferred spikes and the true spike counts in 40 ms bins
  (25 Hz; Theis et al. 2016, Berens et al. 2018), over all of a neuron's recordings;
- error and bias (Rupprecht et al. 2021, `Demo_benchmark_model.py`): both signals Gaussian-smoothed
  (sigma 0.2 s), error = sum |inferred - true| / sum true, bias = sum (inferred - true) / sum true.
  They need calibrated spike counts, so they mean little for OASIS, whose output has arbitrary units.

Statistics are sums, so recordings of one neuron on different ranks merge exactly (`merge`), and every
rank computes the same report from the gathered sums.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from vislab.families.spikes.calcium import bin_spikes, rebin_counts, smooth_counts

ERROR_SMOOTHING_S = 0.2  # CASCADE's default smoothing for its error and bias measures

# per predictor: n, sum p, sum p^2, sum p*y, sum |sp - sy|, sum (sp - sy)
_PRED_FIELDS = 6


def recording_stats(pred: np.ndarray, recording: dict[str, Any], bin_s: float) -> dict[str, Any]:
    """Sufficient statistics of one recording: pred (P, T) spikes per frame at the recording's rate."""
    rate = float(recording["frame_rate"])
    t = pred.shape[-1]
    eval_rate = 1.0 / bin_s
    binned = rebin_counts(pred, rate, eval_rate)  # (P, B) spikes per 40 ms bin; NaN where undefined
    # true counts in the same bins: their left edges start at the left edge of frame 0
    true = bin_spikes(recording["spikes"], -0.5 / rate + 0.5 * bin_s, eval_rate, binned.shape[-1])
    ok = np.all(np.isfinite(binned), axis=0)
    p, y = binned[:, ok], true[ok]
    sp = smooth_counts(p, ERROR_SMOOTHING_S, eval_rate)
    sy = smooth_counts(y, ERROR_SMOOTHING_S, eval_rate)
    pred_stats = np.stack([np.full(len(p), float(ok.sum())), p.sum(1), (p * p).sum(1), (p * y).sum(1),
                           np.abs(sp - sy).sum(1), (sp - sy).sum(1)], axis=1)
    return {
        "y": np.array([float(ok.sum()), y.sum(), (y * y).sum(), sy.sum()]),  # n, sum y, sum y^2, sum smooth y
        "pred": pred_stats,  # (P, 6)
        "duration_s": t / rate,
        "spikes": int(len(recording["spikes"])),
    }


def merge(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    if a is None:
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in b.items()}
    return {k: a[k] + b[k] for k in b}


def _corr(y: np.ndarray, p: np.ndarray) -> float:
    n, sy, syy = y[0], y[1], y[2]
    _, sp, spp, spy = p[0], p[1], p[2], p[3]
    var = (n * spp - sp * sp) * (n * syy - sy * sy)
    return float((n * spy - sp * sy) / math.sqrt(var)) if n > 2 and var > 0 else float("nan")


def neuron_scores(stats: dict[str, Any]) -> dict[str, Any]:
    """Scores of the ensemble mean (row 0) and of every member (rows 1..) of one neuron."""
    y, preds = stats["y"], stats["pred"]
    signal = y[3]
    corrs = [_corr(y, p) for p in preds]
    return {
        "corr": corrs[0],
        "corr_members": corrs[1:],
        "error": float(preds[0][4] / signal) if signal > 0 else float("nan"),
        "bias": float(preds[0][5] / signal) if signal > 0 else float("nan"),
        "spikes": stats["spikes"],
        "duration_s": round(stats["duration_s"], 2),
        "bins": int(y[0]),
    }


def _nanmean(values: Iterable[float]) -> float:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def report(stats: dict[tuple[str, str], dict[str, Any]], seen: set[tuple[str, str]], bin_s: float) -> dict[str, Any]:
    """Per neuron and per dataset scores; summary means over the neurons the model did not train on.

    The summary `corr` is the mean over datasets of each dataset's mean over its neurons (every dataset
    counts once, as in leave-one-dataset-out tables); `corr_neurons` is the plain mean over neurons;
    `corr_member` averages the single members' correlations (the score of one network)."""
    neurons: dict[str, dict[str, Any]] = {}
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for (ds, neuron), s in sorted(stats.items()):
        score = {**neuron_scores(s), "seen_in_training": (ds, neuron) in seen}
        neurons[f"{ds}/{neuron}"] = score
        by_dataset.setdefault(ds, []).append(score)
    datasets = {}
    for ds, scores in by_dataset.items():
        unseen = [s for s in scores if not s["seen_in_training"]]
        datasets[ds] = {
            "corr": _nanmean(s["corr"] for s in unseen),
            "corr_member": _nanmean(_nanmean(s["corr_members"]) for s in unseen),
            "error": _nanmean(s["error"] for s in unseen),
            "bias": _nanmean(s["bias"] for s in unseen),
            "neurons": len(scores),
            "neurons_unseen": len(unseen),
            "corr_seen": _nanmean(s["corr"] for s in scores if s["seen_in_training"]),
        }
    unseen_ds = [d for d in datasets.values() if d["neurons_unseen"]]
    all_unseen = [s for s in neurons.values() if not s["seen_in_training"]]
    return {
        "metric": f"Pearson correlation with true spike counts in {bin_s * 1000:g} ms bins; error/bias as CASCADE "
                  f"(Gaussian {ERROR_SMOOTHING_S} s); summary over neurons not used in training",
        "corr": _nanmean(d["corr"] for d in unseen_ds),
        "corr_member": _nanmean(d["corr_member"] for d in unseen_ds),
        "error": _nanmean(d["error"] for d in unseen_ds),
        "bias": _nanmean(d["bias"] for d in unseen_ds),
        "corr_neurons": _nanmean(s["corr"] for s in all_unseen),
        "neurons_unseen": len(all_unseen),
        "neurons_seen": len(neurons) - len(all_unseen),
        "datasets": datasets,
        "neurons": neurons,
    }
