"""Simulated calcium ground truth for the demo and the tests: spikes -> calcium kernel -> noise.

Spikes come from a bursty inhomogeneous Poisson process (a slowly varying, rectified log-normal rate);
each spike adds a double-exponential transient (rise `tau_rise`, decay `tau_decay`, amplitude `amplitude`
dF/F per spike), mildly saturating as in real indicators; Gaussian noise of noise level nu is added at the
frame rate. Each simulated dataset is one 'indicator' (its own decay and amplitude).
"""

from __future__ import annotations

import fcntl
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter

from vislab.families.spikes.calcium import noise_std_for_level
from vislab.families.spikes.recordings import Recording, split_recording, write_calcium_root
from vislab.families.spikes.schema import SimulationConfig

# (decay s, rise s, amplitude dF/F per spike): GCaMP6f-like, GCaMP6s-like, OGB-1-like, then repeat
INDICATORS = [(0.4, 0.05, 0.35), (1.2, 0.08, 0.6), (0.8, 0.02, 0.12)]


def spike_train(rng: np.random.Generator, duration_s: float, mean_rate: float, burstiness: float,
                dt: float = 1e-3) -> np.ndarray:
    """Spike times (s) of an inhomogeneous Poisson process: log-rate fluctuating with std `burstiness`."""
    n = int(duration_s / dt)
    drive = gaussian_filter1d(rng.normal(size=n), sigma=0.3 / dt)  # fluctuations on a 0.3 s time scale
    drive /= drive.std()
    rate = np.exp(burstiness * drive)
    rate *= mean_rate / rate.mean()
    return np.flatnonzero(rng.uniform(size=n) < rate * dt) * dt


def calcium_trace(spikes: np.ndarray, duration_s: float, frame_rate: float, tau_decay: float, tau_rise: float,
                  amplitude: float, rng: np.random.Generator, nu: float, dt: float = 1e-3) -> np.ndarray:
    """dF/F sampled at `frame_rate` (frame k centred at k / frame_rate) with noise level `nu`."""
    n = int(duration_s / dt)
    s = np.zeros(n)
    np.add.at(s, np.minimum((spikes / dt).astype(np.int64), n - 1), 1.0)
    decay = lfilter([1.0], [1.0, -math.exp(-dt / tau_decay)], s)  # sum of exp(-t / tau_decay)
    rise = lfilter([1.0], [1.0, -math.exp(-dt / tau_rise)], s)
    c = amplitude * (decay - rise)
    c = c / (1.0 + 0.1 * c)  # indicator saturation
    frames = np.arange(int(duration_s * frame_rate))
    x = np.interp(frames / frame_rate, np.arange(n) * dt, c)
    return x + rng.normal(0.0, float(noise_std_for_level(nu, frame_rate)), size=len(x))


def simulate_recordings(cfg: SimulationConfig) -> list[Recording]:
    rng = np.random.default_rng(cfg.seed)
    out: list[Recording] = []
    for d in range(cfg.datasets):
        decay, rise, amp = INDICATORS[d % len(INDICATORS)]
        name = f"SIM{d:02d}-tau{decay:g}s"
        for k in range(cfg.neurons):
            spikes = spike_train(rng, cfg.duration_s, cfg.spike_rate * rng.uniform(0.5, 1.5), cfg.burstiness)
            gain = amp * rng.uniform(0.7, 1.3)
            x = calcium_trace(spikes, cfg.duration_s, cfg.frame_rate, decay, rise, gain, rng, cfg.noise_level)
            out.extend(split_recording(name, f"neuron{k:03d}", 0, None, x, cfg.frame_rate, spikes))
    return out


def ensure_simulated_root(cfg: SimulationConfig, root: Path, log: Callable[[str], None] = print) -> Path:
    """Write (or confirm up to date) the simulated data root; concurrent ranks take turns (a file lock), and
    the shard writer's fingerprints make every turn after the first a no-op."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".simulate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_calcium_root(simulate_recordings(cfg), root, val_fraction=0.25, seed=cfg.seed, samples_per_shard=64,
                           source=f"simulated {cfg}", log=log)
    return root
