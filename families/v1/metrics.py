"""How well predicted responses match recorded ones, per neuron (the measures of the V1 literature).

With `responses` (trials, neurons), `predictions` of the same shape and `image_ids` (trials,) naming the image
shown on each trial (the test tier repeats each image ~10 times):

- single-trial correlation: Pearson r over all trials, per neuron;
- correlation to average: r between the prediction and the trial-averaged response, over images;
- FEV / FEVE (Cadena et al. 2019, PLoS CB 15:e1006897): noise variance = mean over images of the variance
  across repeats; FEV = 1 - noise / total variance; FEVE = 1 - (MSE - noise) / (total - noise);
- oracle correlation (leave-one-repeat-out): r between each trial and the mean of the other repeats of its
  image, the ceiling a model of the mean response can reach on single trials.

Correlations follow neuralpredictors' `corr`: population std (ddof=0) plus eps, so a constant prediction has
r = 0 instead of NaN. Variances use ddof=1 as in Cadena et al. NumPy for the end-of-test report; the streaming
`CorrelationSums` (torchmetrics) for validation every epoch, summed exactly across DDP ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

EPS = 1e-8
FEV_THRESHOLD = 0.15
"""Neurons with less explainable variance are left out of the mean FEVE (SENSORIUM 2022 convention)."""


def correlation(x: np.ndarray, y: np.ndarray, axis: int = 0, eps: float = EPS) -> np.ndarray:
    """Pearson r along `axis` (per neuron for (trials, neurons) inputs); 0 where either side is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xs = (x - x.mean(axis=axis, keepdims=True)) / (x.std(axis=axis, keepdims=True) + eps)
    ys = (y - y.mean(axis=axis, keepdims=True)) / (y.std(axis=axis, keepdims=True) + eps)
    return (xs * ys).mean(axis=axis)


def repeat_groups(image_ids: np.ndarray, min_repeats: int = 2) -> list[np.ndarray]:
    """Trial indices of each image shown at least `min_repeats` times, in ascending image id order."""
    ids = np.asarray(image_ids)
    unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    groups = np.split(order, np.cumsum(counts)[:-1])
    return [g for g, c in zip(groups, counts, strict=True) if c >= min_repeats]


def oracle_correlation(responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """Leave-one-repeat-out oracle r per neuron: each trial against the mean of the other repeats."""
    groups = repeat_groups(image_ids)
    if not groups:
        raise ValueError("oracle correlation needs repeated images (no image id occurs twice)")
    r = np.asarray(responses, dtype=np.float64)
    trials, loo = [], []
    for g in groups:
        block = r[g]  # (repeats, neurons)
        trials.append(block)
        loo.append((block.sum(0, keepdims=True) - block) / (len(g) - 1))
    return correlation(np.concatenate(trials), np.concatenate(loo))


def correlation_to_average(predictions: np.ndarray, responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """r between the prediction and the response averaged over repeats, across images, per neuron."""
    groups = repeat_groups(image_ids, min_repeats=1)
    p = np.asarray(predictions, dtype=np.float64)
    r = np.asarray(responses, dtype=np.float64)
    mean_pred = np.stack([p[g].mean(0) for g in groups])
    mean_resp = np.stack([r[g].mean(0) for g in groups])
    return correlation(mean_pred, mean_resp)


def variances(responses: np.ndarray, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(total variance, noise variance) per neuron, over the trials of repeated images (ddof=1)."""
    groups = repeat_groups(image_ids)
    if not groups:
        raise ValueError("explainable variance needs repeated images (no image id occurs twice)")
    r = np.asarray(responses, dtype=np.float64)
    trials = np.concatenate(groups)
    total = r[trials].var(axis=0, ddof=1)
    noise = np.mean([r[g].var(axis=0, ddof=1) for g in groups], axis=0)
    return total, noise


def fev(responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """Fraction of the response variance that is explainable (not trial-to-trial noise), per neuron."""
    total, noise = variances(responses, image_ids)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - noise / total


def feve(predictions: np.ndarray, responses: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """Fraction of explainable variance explained per neuron (NaN where nothing is explainable)."""
    total, noise = variances(responses, image_ids)
    trials = np.concatenate(repeat_groups(image_ids))
    p = np.asarray(predictions, dtype=np.float64)[trials]
    r = np.asarray(responses, dtype=np.float64)[trials]
    mse = ((p - r) ** 2).mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 1.0 - (mse - noise) / (total - noise)
    return np.where(total > noise, out, np.nan)


def evaluate_neurons(predictions: np.ndarray, responses: np.ndarray, image_ids: np.ndarray) -> dict[str, np.ndarray]:
    """All per-neuron measures of one session's test trials ({} of the repeat-based ones without repeats)."""
    out = {"corr": correlation(predictions, responses)}
    if repeat_groups(image_ids):
        out["corr_to_average"] = correlation_to_average(predictions, responses, image_ids)
        out["oracle"] = oracle_correlation(responses, image_ids)
        out["fev"] = fev(responses, image_ids)
        out["feve"] = feve(predictions, responses, image_ids)
    return out


def summarize(per_neuron: dict[str, np.ndarray]) -> dict[str, Any]:
    """Population means; FEVE over neurons with FEV > FEV_THRESHOLD; the fraction of the oracle reached."""
    out: dict[str, Any] = {"num_neurons": int(len(per_neuron["corr"])), "corr": float(np.mean(per_neuron["corr"]))}
    if "oracle" in per_neuron:
        out["corr_to_average"] = float(np.mean(per_neuron["corr_to_average"]))
        out["oracle"] = float(np.mean(per_neuron["oracle"]))
        out["fraction_of_oracle"] = out["corr"] / out["oracle"] if out["oracle"] > 0 else None
        keep = per_neuron["fev"] > FEV_THRESHOLD
        out["fev"] = float(np.nanmean(per_neuron["fev"]))
        out["feve"] = float(np.nanmean(per_neuron["feve"][keep])) if keep.any() else None
        out["feve_num_neurons"] = int(keep.sum())
    return out


def json_list(values: np.ndarray, digits: int = 5) -> list[float | None]:
    """A JSON-safe list (NaN -> null), rounded to keep per-neuron reports readable."""
    return [None if not np.isfinite(v) else round(float(v), digits) for v in np.asarray(values, dtype=np.float64)]


class CorrelationSums(Metric):
    """Streaming per-neuron Pearson r: float64 sums, summed across ranks, so DDP gives the one-process value.

    (torchmetrics' PearsonCorrCoef returns NaN with a warning for a silent neuron and merges ranks with
    Welford updates in the input dtype; sums in float64 are exact to merge and give r = 0 for a constant.)
    """

    full_state_update = False
    n: torch.Tensor
    sx: torch.Tensor
    sy: torch.Tensor
    sxx: torch.Tensor
    syy: torch.Tensor
    sxy: torch.Tensor

    def __init__(self, num_neurons: int, eps: float = EPS, **kwargs: Any):
        super().__init__(**kwargs)
        self.eps = eps
        for name in ("n", "sx", "sy", "sxx", "syy", "sxy"):
            self.add_state(name, default=torch.zeros(num_neurons, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions: torch.Tensor, responses: torch.Tensor) -> None:  # (trials, neurons) each
        x = predictions.detach().to(torch.float64)
        y = responses.detach().to(torch.float64)
        self.n += x.shape[0]
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.sxx += (x * x).sum(0)
        self.syy += (y * y).sum(0)
        self.sxy += (x * y).sum(0)

    def compute(self) -> torch.Tensor:
        n = self.n.clamp(min=1)
        mx, my = self.sx / n, self.sy / n
        cov = self.sxy / n - mx * my
        sdx = (self.sxx / n - mx * mx).clamp(min=0).sqrt()
        sdy = (self.syy / n - my * my).clamp(min=0).sqrt()
        return (cov / ((sdx + self.eps) * (sdy + self.eps))).float()


class TrialCollector(Metric):
    """Every test trial's predictions, responses and image id, gathered from all ranks.

    States are flat float64 vectors: a rank without trials of a session contributes an empty (0,) vector,
    which torchmetrics can gather next to the others (2-D states of a different rank would not match)."""

    full_state_update = False
    predictions: list[torch.Tensor]
    responses: list[torch.Tensor]
    image_ids: list[torch.Tensor]

    def __init__(self, num_neurons: int):
        super().__init__()
        self.num_neurons = num_neurons
        for name in ("predictions", "responses", "image_ids"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)

    def update(self, predictions: torch.Tensor, responses: torch.Tensor, image_ids: torch.Tensor) -> None:
        self.predictions.append(predictions.detach().double().flatten())
        self.responses.append(responses.detach().double().flatten())
        self.image_ids.append(image_ids.detach().double())

    def ensure_state(self) -> None:
        """A rank that saw no trial of this session still contributes float64 (0,) tensors to the gather
        (torchmetrics would stand in float32 ones, whose byte sizes do not match the other ranks')."""
        for name in ("predictions", "responses", "image_ids"):
            state = getattr(self, name)
            if isinstance(state, list) and not state:
                state.append(torch.zeros(0, dtype=torch.float64, device=self.device))

    def compute(self) -> dict[str, np.ndarray]:
        def cat(x: Any) -> np.ndarray:
            return (dim_zero_cat(x) if isinstance(x, list) and x else (x if torch.is_tensor(x) else torch.zeros(0))).cpu().numpy()

        n = self.num_neurons
        return {"predictions": cat(self.predictions).reshape(-1, n), "responses": cat(self.responses).reshape(-1, n),
                "image_ids": cat(self.image_ids).astype(np.int64)}
