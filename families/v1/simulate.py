"""A population of model V1 neurons with known ground truth, written in the Sinz-lab static layout.

    vislab simulate v1 OUT [--sessions 2 --neurons 80 --train 2500 ...]   # OUT/<session>/ per session
    vislab shard OUT --out DATA                                            # the same importer as real data

Stimuli are natural image patches: random crops (random scale, position and mirror) of the two photographs that
ship inside the scikit-learn wheel (`sklearn.datasets.load_sample_images`), so nothing is downloaded. Each
neuron is a Gabor model (Hubel & Wiesel; Adelson & Bergen 1985) with a random position, orientation, spatial
frequency, envelope width and phase:

    simple cell:   drive = relu(<G_phase, x>)
    complex cell:  drive = <G_phase, x>^2 + <G_phase+90deg, x>^2        (energy of a quadrature pair)
    rate = mean_rate + sqrt(snr * mean_rate) * standardised(drive),  response ~ Poisson(rate)

so every neuron has a chosen mean rate and signal-to-noise ratio (signal variance / Poisson noise variance),
like real recordings with low explainable variance. Sessions have disjoint neurons and their own images; the
test tier repeats each test image `repeats` times (same `frame_image_id`). Cortical coordinates follow a noisy
retinotopic map of the receptive-field centres, as in a real recording.

`ground_truth.npz` beside each session's `data/` and `meta/` holds the truth the tests check against:
receptive-field centres in image pixels (x = column, y = row), Gabor parameters, cell type, and the noise-free
rate of every trial.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

GROUND_TRUTH = "ground_truth.npz"


@dataclass
class SimulationConfig:
    sessions: int = 2
    """Recording sessions (disjoint neurons, separate images), written to OUT/<prefix><k>/."""
    neurons: int = 80
    """Neurons per session."""
    train: int = 2500
    """Training trials per session (unique images)."""
    validation: int = 300
    """Validation trials per session (unique images)."""
    test_images: int = 50
    """Test images per session, each shown `repeats` times."""
    repeats: int = 10
    height: int = 36
    width: int = 64
    complex_fraction: float = 0.4
    """Fraction of complex cells (the rest are simple cells)."""
    margin: int = 10
    """Receptive-field centres lie at least this many pixels inside the image border."""
    wavelength: tuple[float, float] = (4.0, 8.0)
    """Range of Gabor wavelengths in pixels (spatial frequency = 1 / wavelength)."""
    mean_rate: tuple[float, float] = (1.0, 4.0)
    """Range of mean responses (spikes per trial)."""
    snr: tuple[float, float] = (0.3, 1.0)
    """Range of signal variance / Poisson noise variance per neuron."""
    seed: int = 0
    prefix: str = "sim-v1-s"
    rounding_negatives: float = 0.0
    """Fraction of the zero responses written as tiny negatives (down to -5.5e-8), as the float rounding of
    deconvolved activity leaves them in real recordings (the importer sets them back to 0)."""


# ------------------------------------------------------------------------------------------ stimuli
def photographs() -> list[np.ndarray]:
    """The two sample photographs of scikit-learn, as float grey images 0..255 (427 x 640)."""
    from sklearn.datasets import (
        load_sample_images,  # scikit-learn: slow to import, only for the embedded data
    )

    return [img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            for img in load_sample_images().images]


def image_patches(count: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(count, height, width) float32 crops at random scale (1-3x), position and mirror, values 0..255."""

    photos = photographs()
    out = np.empty((count, height, width), dtype=np.float32)
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        scale = rng.uniform(1.0, 3.0)
        ch, cw = int(round(height * scale)), int(round(width * scale))
        top = rng.integers(0, photo.shape[0] - ch + 1)
        left = rng.integers(0, photo.shape[1] - cw + 1)
        crop = photo[top:top + ch, left:left + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        # PIL's bilinear filter widens its support when shrinking, i.e. it antialiases
        patch = Image.fromarray(np.ascontiguousarray(crop)).resize((width, height), Image.Resampling.BILINEAR)
        out[i] = np.clip(np.asarray(patch, dtype=np.float32), 0, 255)
    return out


# ------------------------------------------------------------------------------------------ neurons
@dataclass
class Population:
    """Ground truth of one session's neurons (all arrays have one entry per neuron)."""

    center_x: np.ndarray
    center_y: np.ndarray
    orientation: np.ndarray
    wavelength: np.ndarray
    sigma: np.ndarray
    phase: np.ndarray
    is_complex: np.ndarray
    mean_rate: np.ndarray
    snr: np.ndarray


def sample_population(cfg: SimulationConfig, rng: np.random.Generator) -> Population:
    n = cfg.neurons
    wavelength = rng.uniform(*cfg.wavelength, n)
    return Population(
        center_x=rng.uniform(cfg.margin, cfg.width - 1 - cfg.margin, n),
        center_y=rng.uniform(cfg.margin, cfg.height - 1 - cfg.margin, n),
        orientation=rng.uniform(0, np.pi, n),
        wavelength=wavelength,
        sigma=wavelength * rng.uniform(0.35, 0.5, n),  # ~1-1.5 octave bandwidth
        phase=rng.uniform(0, 2 * np.pi, n),
        is_complex=rng.random(n) < cfg.complex_fraction,
        mean_rate=rng.uniform(*cfg.mean_rate, n),
        snr=rng.uniform(*cfg.snr, n),
    )


def gabors(pop: Population, height: int, width: int, phase_shift: float = 0.0) -> np.ndarray:
    """(neurons, height * width) Gabor filters, each with unit L2 norm."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    dx = x[None] - pop.center_x[:, None, None]
    dy = y[None] - pop.center_y[:, None, None]
    th = pop.orientation[:, None, None]
    along = dx * np.cos(th) + dy * np.sin(th)
    envelope = np.exp(-(dx**2 + dy**2) / (2 * pop.sigma[:, None, None] ** 2))
    carrier = np.cos(2 * np.pi * along / pop.wavelength[:, None, None] + pop.phase[:, None, None] + phase_shift)
    n = len(pop.center_x)
    env = envelope.reshape(n, -1)
    g = (envelope * carrier).reshape(n, -1)
    g -= env * (g.sum(1, keepdims=True) / env.sum(1, keepdims=True))  # no response to uniform luminance
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def drives(pop: Population, images: np.ndarray) -> np.ndarray:
    """(trials, neurons) noise-free drive of every neuron to images (trials, H, W) in 0..255."""
    t, h, w = images.shape
    x = (images.reshape(t, -1).astype(np.float64) - 128.0) / 64.0  # fixed contrast scale for every session
    even = x @ gabors(pop, h, w).T
    odd = x @ gabors(pop, h, w, np.pi / 2).T
    return np.where(pop.is_complex[None], even**2 + odd**2, np.maximum(even, 0.0))


def rates(pop: Population, drive: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mean rates with each neuron's chosen mean and signal-to-noise ratio (`reference`: training drives)."""
    z = (drive - reference.mean(0)) / (reference.std(0) + 1e-12)
    return np.maximum(pop.mean_rate + np.sqrt(pop.snr * pop.mean_rate) * z, 0.01)


# ------------------------------------------------------------------------------------------- writing
def _save_stats(meta: Path, name: str, values: np.ndarray, per_element: bool) -> None:
    d = meta / "statistics" / name / "all"
    d.mkdir(parents=True, exist_ok=True)
    axis = 0 if per_element else None
    for stat, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max), ("median", np.median)):
        np.save(d / f"{stat}.npy", np.asarray(fn(values, axis=axis), dtype=np.float64))


def write_session(out: Path, cfg: SimulationConfig, index: int) -> Path:
    """Simulate one session and write it in the static layout under out/<prefix><index>/."""
    rng = np.random.default_rng([cfg.seed, index])
    session = out / f"{cfg.prefix}{index}"
    pop = sample_population(cfg, rng)
    n_unique = cfg.train + cfg.validation + cfg.test_images
    images = image_patches(n_unique, cfg.height, cfg.width, rng)
    tiers = np.array(["train"] * cfg.train + ["validation"] * cfg.validation + ["test"] * (cfg.test_images * cfg.repeats))
    image_index = np.concatenate([np.arange(cfg.train + cfg.validation),
                                  np.repeat(np.arange(cfg.train + cfg.validation, n_unique), cfg.repeats)])
    order = rng.permutation(len(tiers))  # real recordings interleave the tiers
    tiers, image_index = tiers[order], image_index[order]

    drive = drives(pop, images)
    rate = rates(pop, drive, drive[: cfg.train])[image_index]  # (trials, neurons)
    responses = rng.poisson(rate).astype(np.float64)
    if cfg.rounding_negatives > 0:  # drawn only when asked: the default sessions stay bit-identical
        rounded = (responses == 0) & (rng.random(responses.shape) < cfg.rounding_negatives)
        responses[rounded] = -rng.uniform(1e-9, 5.5e-8, int(rounded.sum()))
    behavior = np.abs(rng.normal([1.0, 0.0, 2.0], [0.3, 0.1, 1.0], size=(len(tiers), 3)))
    pupil = rng.normal(0.0, 5.0, size=(len(tiers), 2))

    (session / "data").mkdir(parents=True, exist_ok=True)
    for name in ("images", "responses", "behavior", "pupil_center"):
        (session / "data" / name).mkdir(exist_ok=True)
    for i in range(len(tiers)):
        np.save(session / "data" / "images" / f"{i}.npy", images[image_index[i]][None])
        np.save(session / "data" / "responses" / f"{i}.npy", responses[i])
        np.save(session / "data" / "behavior" / f"{i}.npy", behavior[i])
        np.save(session / "data" / "pupil_center" / f"{i}.npy", pupil[i])

    meta = session / "meta"
    (meta / "trials").mkdir(parents=True, exist_ok=True)
    (meta / "neurons").mkdir(parents=True, exist_ok=True)
    np.save(meta / "trials" / "tiers.npy", tiers.astype("<U10"))
    np.save(meta / "trials" / "frame_image_id.npy", (1000 * index + image_index).astype(np.int64))
    np.save(meta / "neurons" / "unit_ids.npy", np.arange(1, cfg.neurons + 1, dtype=np.uint16))
    # a noisy retinotopic map: ~20 um of cortex per pixel of visual field, depth 200-400 um
    coords = np.stack([20 * pop.center_x + rng.normal(0, 15, cfg.neurons),
                       20 * pop.center_y + rng.normal(0, 15, cfg.neurons),
                       rng.uniform(200, 400, cfg.neurons)], axis=1)
    np.save(meta / "neurons" / "cell_motor_coordinates.npy", coords)
    _save_stats(meta, "images", images[image_index], per_element=False)
    _save_stats(meta, "responses", responses, per_element=True)
    _save_stats(meta, "behavior", behavior, per_element=True)
    _save_stats(meta, "pupil_center", pupil, per_element=True)
    (session / "config.json").write_text(json.dumps({"links": {"targets": "responses", "inputs": "images"}}))
    np.savez(session / GROUND_TRUTH, center_x=pop.center_x, center_y=pop.center_y, orientation=pop.orientation,
             wavelength=pop.wavelength, sigma=pop.sigma, phase=pop.phase, is_complex=pop.is_complex,
             mean_rate=pop.mean_rate, snr=pop.snr, rates=rate, tiers=tiers, image_ids=image_index)
    return session


def simulate(out: str | Path, cfg: SimulationConfig | None = None) -> list[Path]:
    """Write `cfg.sessions` sessions under `out`; returns their folders."""
    cfg = cfg or SimulationConfig()
    if cfg.margin * 2 >= min(cfg.height, cfg.width):
        raise ValueError(f"margin {cfg.margin} leaves no room for receptive fields in {cfg.height}x{cfg.width} images")
    out = Path(out)
    return [write_session(out, cfg, k) for k in range(cfg.sessions)]


def main(argv: list[str]) -> int:
    """`vislab simulate v1 OUT [--option value ...]` (options: the fields of SimulationConfig)."""
    p = argparse.ArgumentParser(prog="vislab simulate v1", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="folder that receives one session folder per session")
    defaults = SimulationConfig()
    for f in fields(SimulationConfig):
        value = getattr(defaults, f.name)
        if isinstance(value, tuple):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=float, nargs=2, default=value, metavar=("LOW", "HIGH"))
        else:
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value)
    a = p.parse_args(argv)
    values: dict[str, Any] = {f.name: (tuple(v) if isinstance(v := getattr(a, f.name), list) else v)
                              for f in fields(SimulationConfig)}
    cfg = SimulationConfig(**values)
    for path in simulate(a.out, cfg):
        print(path)
    return 0
