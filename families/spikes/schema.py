"""Schema of the calcium spike-inference family (`task: spikes`): CASCADE-like CNN or the STM baseline.

Light module (no torch): configs are validated before anything is imported or spawned.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

from vislab.core.config import DataConfig, RunConfig
from vislab.data.manifest import Manifest, ShardError, check_data_root


@dataclass
class SimulationConfig:
    """Simulated ground truth made on the fly (`data.simulate.enabled`): spikes -> calcium kernel -> noise."""

    enabled: bool = False
    """Write a simulated ground-truth data root at `data.root` (if absent) before training."""
    datasets: int = 2
    """Simulated 'indicators' (each its own decay time and amplitude, like a real dataset)."""
    neurons: int = 12
    """Neurons per simulated dataset (a quarter go to the val split)."""
    duration_s: float = 120.0
    """Recording length per neuron."""
    frame_rate: float = 30.0
    spike_rate: float = 1.0
    """Mean firing rate (Hz) of the inhomogeneous Poisson process."""
    burstiness: float = 0.6
    """Std of the log firing rate (fluctuating on a 0.3 s time scale): 0 = homogeneous Poisson."""
    noise_level: float = 1.0
    """Noise level nu of the simulated recordings (CASCADE units, % per sqrt(Hz))."""
    seed: int = 0


@dataclass
class CalciumDataConfig(DataConfig):
    """Ground-truth shards (`vislab shard`), noise-matched augmentation and the model's frame rate."""

    frame_rate: float = 25.0
    """The model's frame rate (Hz): every recording is resampled to it, and predictions back to its own rate."""
    segment_frames: int = 64
    """Output frames per training sample (the network runs fully convolutionally over segment + window - 1 frames;
    1 = CASCADE's single-window samples)."""
    smoothing_s: float = 0.02
    """Std of the Gaussian that smooths the target spike counts (s); 0 = raw counts. CASCADE uses 0.05-0.2 s,
    but it scores against smoothed spikes; scored against counts in 40 ms bins, a target smoothed by sigma
    caps the correlation of even a perfect detector (0.67 at 0.05 s)."""
    noise_min: float = 0.3
    noise_max: float = 8.0
    """Range of the target noise level nu (log-uniform) reached by adding noise; a recording noisier than the
    draw is used as it is."""
    shot_noise: bool = True
    """Scale the added noise with sqrt(|1 + dF/F|) (photon shot noise), as CASCADE does."""
    rate_augment: float = 0.5
    """Probability of simulating a slower recording: average down to a random rate in [rate_min, model rate]
    before adding noise and resampling back to the model's rate (what `vislab infer` does to slow data)."""
    rate_min: float = 5.0
    """Slowest simulated frame rate (Hz)."""
    dataset_balance: float = 0.5
    """How often each dataset is drawn: 0 = in proportion to its recording time, 1 = all equally often."""
    datasets: list[str] = field(default_factory=list)
    """Datasets to train and validate on (empty = every dataset under `root`)."""
    exclude_datasets: list[str] = field(default_factory=list)
    """Datasets left out of training and validation (leave-one-dataset-out folds)."""
    test_datasets: list[str] = field(default_factory=list)
    """Datasets evaluated by `vislab test` / after fit (empty = all; neurons seen in training are reported
    but left out of the summary means)."""
    eval_bin_s: float = 0.04
    """Bin width of the evaluation (40 ms = 25 Hz, the spikefinder/CASCADE standard)."""
    simulate: SimulationConfig = field(default_factory=SimulationConfig)


@dataclass
class SpikeModelConfig:
    """CASCADE-like CNN (`cnn`) or the spike-triggered mixture baseline (`stm`)."""

    name: Literal["cnn", "stm"] = "cnn"
    filters: list[int] = field(default_factory=lambda: [30, 40, 50])
    """Channels of the three convolutions (CASCADE: 30, 40, 50)."""
    kernel_sizes: list[int] = field(default_factory=lambda: [31, 19, 5])
    """Kernel sizes of the three convolutions; with two pools of 2 they give a 64-frame window."""
    dense: int = 30
    """Units of the dense layer applied per position before the output."""
    ensemble_size: int = 1
    """Independently initialised members trained side by side and averaged at inference."""
    conditioned: bool = True
    """Give the network the recording's noise level and frame rate as two constant input channels."""
    loss: Literal["mse", "poisson"] = "mse"
    """'mse' against the smoothed spike counts, or 'poisson' likelihood of the raw counts (STM's loss)."""
    stm_window: int = 64
    """STM: window length (frames at the model's rate)."""
    stm_components: int = 4
    """STM: exponential components k."""
    stm_features: int = 4
    """STM: quadratic features m."""

@dataclass
class SpikesConfig(RunConfig):
    """A `task: spikes` run."""

    data: CalciumDataConfig = field(default_factory=CalciumDataConfig)
    model: SpikeModelConfig = field(default_factory=SpikeModelConfig)


def _closest(name: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.4)
    return f" (did you mean '{match[0]}'?)" if match else f" (datasets: {', '.join(valid)})"


def check_spikes(cfg: Any, source: str) -> list[str]:
    """Semantic checks of a spikes config: value ranges, the data root, dataset names."""

    d, m = cfg.data, cfg.model
    p = [f"{source}: '{key}' must be > 0" for key, value in (
        ("data.frame_rate", d.frame_rate), ("data.noise_min", d.noise_min), ("data.rate_min", d.rate_min),
        ("data.segment_frames", d.segment_frames), ("data.eval_bin_s", d.eval_bin_s),
        ("model.ensemble_size", m.ensemble_size), ("model.dense", m.dense)) if value <= 0]
    if d.noise_max < d.noise_min:
        p.append(f"{source}: 'data.noise_max'={d.noise_max} is below 'data.noise_min'={d.noise_min}")
    for key, value in (("data.rate_augment", d.rate_augment), ("data.dataset_balance", d.dataset_balance)):
        if not 0 <= value <= 1:
            p.append(f"{source}: '{key}'={value} must be in [0, 1]")
    if d.smoothing_s < 0:
        p.append(f"{source}: 'data.smoothing_s' must be >= 0")
    for key, value in (("model.filters", m.filters), ("model.kernel_sizes", m.kernel_sizes)):
        if len(value) != 3 or min(value) < 1:
            p.append(f"{source}: '{key}' needs three positive integers (CASCADE: filters [30, 40, 50], kernels [31, 19, 5])")
    if m.name == "stm" and m.stm_window < 2:
        p.append(f"{source}: 'model.stm_window' must be >= 2")
    if d.simulate.enabled:
        return p
    root_problems = check_data_root(d.root, source)
    p += root_problems
    if root_problems:
        return p
    try:
        meta = Manifest.load(f"{d.root}/train").meta
    except ShardError as e:
        return [*p, f"{source}: {e}"]
    if meta.get("family") != "calcium":
        return [*p, f"{source}: 'data.root'={d.root} holds {meta.get('family', 'unknown')} shards, not calcium "
                    "ground truth (write it with `vislab shard SRC --format cascade`)"]
    names = sorted(meta.get("datasets", {}))
    for key in ("datasets", "exclude_datasets", "test_datasets"):
        p += [f"{source}: 'data.{key}' names unknown dataset '{n}'{_closest(n, names)}"
              for n in getattr(d, key) if n not in names]
    train = [n for n in (d.datasets or names) if n not in d.exclude_datasets]
    if not train:
        p.append(f"{source}: no training datasets left after 'data.exclude_datasets'")
    return p
