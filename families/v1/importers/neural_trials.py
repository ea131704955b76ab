"""Trials of neural recordings -> shard sets: what the static-V1 and the NPZ/HDF5 importers share.

An importer describes each recording session as a `SessionSource` (a picklable reader of trial i: image,
responses, optional behaviour and pupil centre; plus per-trial tier and image id, per-neuron ids and cortical
coordinates). `write_sessions` then, streaming over trials in parallel and never holding a session in memory:

1. scans every trial once: shapes and finiteness are checked (errors name session and trial, all reported
   together before any shard is written) and sums of the training tier are accumulated;
2. turns the sums into normalisation statistics (images: one mean/std over all pixels; responses, behaviour,
   pupil centre: per element), stored per session in every split's manifest (`meta.sessions`);
   negative responses that are float rounding (deconvolved activity holds values like -5e-8) are set to 0:
   a neuron whose most negative response lies within `ROUNDING_RTOL` x its scale (its largest |response| in
   the training tier, at least the session's median scale) gets its negative values zeroed, counted in the
   manifest (`meta.sessions[s].rounding`) and the import summary. Larger negative values are real data, kept
   as they are and recorded (`negative_responses`: session, trial, neuron) for the Poisson loss's check;
3. writes `train/`, `val/`, `test/` shard sets. Training trials of all sessions are shuffled together, so every
   shard (and batch) mixes sessions; a shard holds at most `max_trials_per_shard` trials.

A sample: `image.npy` (1, H, W) uint8 when the pixels are whole numbers 0..255 else float32, `responses.npy`
float32 (neurons,), optional `behavior.npy` / `pupil_center.npy` float32, and `json` {session, trial,
image_id, tier}. Keys are `<session>_<trial>`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vislab.core.errors import ConfigError
from vislab.data.manifest import Manifest
from vislab.data.shards import plan_shards, write_shard_set

TIERS = {"train": "train", "training": "train", "validation": "val", "val": "val", "test": "test"}
"""Tier names of the sources -> split names of vislab. Other tiers (e.g. 'final_test') are left out."""
OPTIONAL_FIELDS = ("behavior", "pupil_center")
MAX_PROBLEMS = 20
ROUNDING_RTOL = 1e-4
"""Negative responses within this fraction of the neuron's scale are float rounding, set to 0 at import."""


def session_key(name: str) -> str:
    """A session id usable as a module name and a shard key ('.' would split both)."""
    return name.replace(".", "_").replace(" ", "_")


@dataclass
class SessionSource:
    """One recording session. Subclasses implement `read(trial)`; everything here must be picklable."""

    session: str
    path: str
    tiers: np.ndarray
    """(trials,) tier name of every trial ('train', 'validation', 'test', ...)."""
    image_ids: np.ndarray
    """(trials,) int64 id of the image shown; repeats of an image share it."""
    num_neurons: int
    image_shape: tuple[int, ...]
    """(channels, height, width) every image must have (after `image_scale`)."""
    unit_ids: np.ndarray | None = None
    coordinates: np.ndarray | None = None
    """(neurons, 3) cortical coordinates (Sinz: `cell_motor_coordinates`), if recorded."""
    image_scale: float = 1.0
    """Resize images by this factor while importing (e.g. 0.25: 144x256 -> 36x64)."""
    fields: tuple[str, ...] = field(default_factory=tuple)
    """Optional per-trial fields this session has (a subset of OPTIONAL_FIELDS)."""
    rounding_neurons: np.ndarray | None = None
    """(neurons,) bool: neurons whose negative responses are float rounding, set to 0 (decided after the scan)."""

    def read(self, trial: int) -> dict[str, np.ndarray]:
        """{'image': (C, H, W), 'responses': (neurons,), optional fields} of one trial, as stored."""
        raise NotImplementedError

    def where(self, trial: int) -> str:
        return f"session {self.session} trial {trial} ({self.path})"

    def trial(self, trial: int) -> dict[str, np.ndarray]:
        """`read` + resizing + checks: a clear ConfigError naming session and trial for bad data."""
        data = self.read(trial)
        image = np.asarray(data["image"])
        if image.ndim == 2:
            image = image[None]
        if self.image_scale != 1.0:
            image = rescale(image, self.image_scale)
        data["image"] = image
        if self.rounding_neurons is not None:
            responses = np.array(data["responses"], dtype=np.float64)
            responses[self.rounding_neurons & (responses < 0)] = 0.0
            data["responses"] = responses
        problems = check_trial(data, self.num_neurons, self.image_shape, self.where(trial))
        if problems:
            raise ConfigError(problems)
        return data


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """(C, H, W) float image resized by `scale` (bilinear; PIL widens the filter when shrinking = antialias)."""

    c, h, w = image.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(image[i].astype(np.float32)).resize(size, Image.Resampling.BILINEAR)) for i in range(c)])


def check_trial(data: dict[str, np.ndarray], num_neurons: int, image_shape: Sequence[int], where: str) -> list[str]:
    problems = []
    image, responses = data["image"], np.asarray(data["responses"])
    if tuple(image.shape) != tuple(image_shape):
        problems.append(f"{where}: image has shape {tuple(image.shape)}, the session's images are {tuple(image_shape)}")
    elif not np.isfinite(image).all():
        problems.append(f"{where}: image has NaN/Inf pixels")
    if responses.shape != (num_neurons,):
        problems.append(f"{where}: responses have shape {responses.shape}, the session has {num_neurons} neurons")
    elif not np.isfinite(responses).all():
        bad = np.flatnonzero(~np.isfinite(responses))
        problems.append(f"{where}: responses are NaN/Inf for {len(bad)} neuron(s), first at neuron index {bad[0]}")
    for name in OPTIONAL_FIELDS:
        if name in data and not np.isfinite(np.asarray(data[name], dtype=np.float64)).all():
            problems.append(f"{where}: {name} has NaN/Inf values")
    return problems


# ------------------------------------------------------------------------------------------- scan pass
@dataclass
class Negatives:
    """Per neuron, over every kept trial: the lowest response and its trial, how many are < 0, and (training
    tier) the sum and sum of squares of the negative values (to correct the statistics when they are zeroed)."""

    low: np.ndarray | None = None
    low_trial: np.ndarray | None = None
    count: np.ndarray | None = None
    train: np.ndarray | None = None  # (2, neurons)

    def add(self, trial: int, responses: np.ndarray, is_train: bool) -> None:
        r = np.asarray(responses, np.float64)
        if self.low is None:
            self.low, self.low_trial = r.copy(), np.full(r.shape, trial, np.int64)
            self.count, self.train = np.zeros(r.shape, np.int64), np.zeros((2, *r.shape))
        else:
            lower = r < self.low
            self.low, self.low_trial = np.where(lower, r, self.low), np.where(lower, trial, self.low_trial)  # type: ignore[arg-type]
        neg = np.minimum(r, 0.0)
        self.count += r < 0  # type: ignore[operator]
        if is_train:
            self.train += np.stack([neg, neg * neg])  # type: ignore[operator]

    def merge(self, other: Negatives) -> Negatives:
        if other.low is None:
            return self
        if self.low is None:
            return other
        lower = other.low < self.low
        return Negatives(np.where(lower, other.low, self.low), np.where(lower, other.low_trial, self.low_trial),  # type: ignore[arg-type]
                         self.count + other.count, self.train + other.train)  # type: ignore[operator]


@dataclass
class Sums:
    """Sufficient statistics of the training trials of one session (float64; added across chunks)."""

    n: int = 0
    pixels: int = 0
    image: np.ndarray = field(default_factory=lambda: np.zeros(4))  # sum, sum of squares, min, max
    responses: np.ndarray | None = None  # (4, neurons): sum, sum of squares, min, max
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # (4, k) per optional field
    negatives: Negatives = field(default_factory=Negatives)

    def add(self, data: dict[str, np.ndarray]) -> None:
        img = data["image"].astype(np.float64)
        first = self.n == 0
        self.n += 1
        self.pixels += img.size
        self.image = _accumulate(self.image, img.ravel(), first, reduce_all=True)
        self.responses = _accumulate(self.responses, np.asarray(data["responses"], np.float64), first)
        for name in OPTIONAL_FIELDS:
            if name in data:
                self.extra[name] = _accumulate(self.extra.get(name), np.asarray(data[name], np.float64).ravel(), first)

    def merge(self, other: Sums) -> Sums:
        negatives = self.negatives.merge(other.negatives)  # val/test trials count too, even without training ones
        if other.n == 0:
            out = self
        elif self.n == 0:
            out = other
        else:
            out = Sums(self.n + other.n, self.pixels + other.pixels, _combine(self.image, other.image),
                       _combine(self.responses, other.responses))  # type: ignore[arg-type]
            out.extra = {k: _combine(self.extra[k], other.extra[k]) for k in self.extra if k in other.extra}
        out.negatives = negatives
        return out


def _accumulate(acc: np.ndarray | None, x: np.ndarray, first: bool, reduce_all: bool = False) -> np.ndarray:
    if reduce_all:
        new = np.array([x.sum(), (x * x).sum(), x.min(), x.max()])
    else:
        new = np.stack([x, x * x, x, x])
    return new if first or acc is None else _combine(acc, new)


def _combine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([a[:2] + b[:2], np.minimum(a[2:3], b[2:3]), np.maximum(a[3:4], b[3:4])])


def _stats(acc: np.ndarray, n: int) -> dict[str, Any]:
    mean = acc[0] / n
    std = np.sqrt(np.maximum(acc[1] / n - mean * mean, 0.0))
    as_list = (lambda v: float(v)) if np.ndim(mean) == 0 else (lambda v: [float(x) for x in v])
    return {"mean": as_list(mean), "std": as_list(std), "min": as_list(acc[2]), "max": as_list(acc[3])}


def scan_chunk(source: SessionSource, trials: Sequence[int]) -> tuple[Sums, list[str]]:
    """Check trials and sum the training ones (runs in a worker process)."""
    sums, problems = Sums(), []
    for t in trials:
        try:
            data = source.trial(int(t))
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{source.where(int(t))}: unreadable ({type(e).__name__}: {e})")
            continue
        is_train = TIERS.get(str(source.tiers[t])) == "train"
        sums.negatives.add(int(t), data["responses"], is_train)
        if is_train:
            sums.add(data)
    return sums, problems


def zero_rounding(source: SessionSource, sums: Sums) -> dict[str, Any]:
    """Decide which neurons' negative responses are float rounding (see the module docstring), mark them on
    `source` (its trials then read them as 0), correct `sums` to the zeroed values, and report both kinds."""
    neg, acc = sums.negatives, sums.responses
    if neg.low is None or acc is None or not (neg.low < 0).any():
        return {}
    scale = np.maximum(np.abs(acc[2]), np.abs(acc[3]))  # largest |response| of each neuron (training tier)
    tolerance = ROUNDING_RTOL * np.maximum(scale, np.median(scale))
    negative = neg.low < 0
    rounding = negative & (neg.low >= -tolerance)
    report: dict[str, Any] = {}
    if rounding.any():
        source.rounding_neurons = rounding
        acc[0] -= np.where(rounding, neg.train[0], 0.0)  # type: ignore[index]
        acc[1] -= np.where(rounding, neg.train[1], 0.0)  # type: ignore[index]
        acc[2] = np.where(rounding, np.maximum(acc[2], 0.0), acc[2])
        report["rounding"] = {"values_set_to_zero": int(neg.count[rounding].sum()),  # type: ignore[index]
                              "neurons": int(rounding.sum()), "most_negative": float(neg.low[rounding].min()),
                              "relative_tolerance": ROUNDING_RTOL}
    real = negative & ~rounding
    if real.any():
        i = int(np.argmin(np.where(real, neg.low / np.maximum(tolerance, 1e-300), 0.0)))
        report["negative_responses"] = {"neurons": int(real.sum()), "trial": int(neg.low_trial[i]),  # type: ignore[index]
                                        "neuron": i, "value": float(neg.low[i]), "tolerance": float(tolerance[i])}
        if source.unit_ids is not None:
            report["negative_responses"]["unit_id"] = int(source.unit_ids[i])
    return report


def scan(sources: Sequence[SessionSource], workers: int, chunk: int = 256) -> list[Sums]:
    """One parallel pass over every trial; raises ConfigError listing the first problems found."""
    jobs = [(i, trials) for i, s in enumerate(sources) for trials in _chunks(np.flatnonzero(_kept(s)), chunk)]
    totals = [Sums() for _ in sources]
    problems: list[str] = []
    if workers <= 1 or len(jobs) <= 1:
        results: Iterator[tuple[Sums, list[str]]] = (scan_chunk(sources[i], t) for i, t in jobs)
        for (i, _), (sums, probs) in zip(jobs, results, strict=True):
            totals[i] = totals[i].merge(sums)
            problems += probs
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(scan_chunk, sources[i], t) for i, t in jobs]
            for (i, _), fut in zip(jobs, futures, strict=True):
                sums, probs = fut.result()
                totals[i] = totals[i].merge(sums)
                problems += probs
    if problems:
        more = f" ... and {len(problems) - MAX_PROBLEMS} more problem(s)" if len(problems) > MAX_PROBLEMS else ""
        raise ConfigError(problems[:MAX_PROBLEMS] + ([more] if more else []))
    for s, total in zip(sources, totals, strict=True):
        if total.n == 0:
            raise ConfigError([f"session {s.session} ({s.path}): no trials in the 'train' tier"])
    return totals


def _kept(source: SessionSource) -> np.ndarray:
    return np.array([str(t) in TIERS for t in source.tiers], dtype=bool)


def _chunks(indices: np.ndarray, size: int) -> list[list[int]]:
    return [indices[i:i + size].tolist() for i in range(0, len(indices), size)]


# ---------------------------------------------------------------------------------------- meta + shards
def session_meta(source: SessionSource, sums: Sums) -> dict[str, Any]:
    split_of = np.array([TIERS.get(str(t), "") for t in source.tiers])
    meta: dict[str, Any] = {
        "source": source.path,
        "num_neurons": source.num_neurons,
        "image_shape": list(source.image_shape),
        "num_trials": {split: int((split_of == split).sum()) for split in ("train", "val", "test")},
        "fields": list(source.fields),
        "statistics_tier": "train",
        "statistics": {"images": _stats(sums.image, sums.pixels), "responses": _stats(sums.responses, sums.n)},  # type: ignore[arg-type]
    }
    for name, acc in sums.extra.items():
        meta["statistics"][name] = _stats(acc, sums.n)
    if source.unit_ids is not None:
        meta["unit_ids"] = [int(u) for u in source.unit_ids]
    if source.coordinates is not None:
        meta["cell_motor_coordinates"] = np.asarray(source.coordinates, np.float64).round(3).tolist()
    left_out = sorted({str(t) for t in source.tiers} - set(TIERS))
    if left_out:
        meta["tiers_left_out"] = {t: int((source.tiers == t).sum()) for t in left_out}
    return meta


def encode_trial(item: tuple[int, int], sources: Sequence[SessionSource]) -> dict[str, Any]:
    s, t = item
    source = sources[s]
    data = source.trial(t)
    image = data["image"]
    integral = image.min() >= 0 and image.max() <= 255 and np.array_equal(image, np.round(image))
    sample: dict[str, Any] = {
        "__key__": f"{source.session}_{t:07d}",
        "image.npy": image.astype(np.uint8 if integral else np.float32),
        "responses.npy": np.asarray(data["responses"], dtype=np.float32),
        "json": {"session": source.session, "trial": int(t), "image_id": int(source.image_ids[t]),
                 "tier": str(source.tiers[t])},
    }
    for name in OPTIONAL_FIELDS:
        if name in data:
            sample[f"{name}.npy"] = np.asarray(data[name], dtype=np.float32).ravel()
    return sample


def write_sessions(sources: Sequence[SessionSource], out: Path, *, shard_size_mb: float = 256, workers: int = 4,
                   seed: int = 0, max_trials_per_shard: int = 500, family_source: str = "",
                   log: Callable[[str], None] = print) -> dict[str, Manifest]:
    names = [s.session for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError([f"session id(s) {dupes} occur twice: session ids (folder / file names) must be unique"])
    log(f"scanning {sum(len(s.tiers) for s in sources)} trials of {len(sources)} session(s) ({', '.join(names)})")
    for s in sources:
        if s.image_shape[1] >= 72 and s.image_shape[2] >= 128:
            log(f"session {s.session}: images are {s.image_shape[1]}x{s.image_shape[2]}; configs/v1 are tuned for "
                f"36x64 (SENSORIUM's 0.25 downsampling): consider --image-scale {36 / s.image_shape[1]:.3g}")
    totals = scan(sources, workers)
    negatives = {s.session: zero_rounding(s, t) for s, t in zip(sources, totals, strict=True)}
    meta: dict[str, Any] = {"family": "neural",
                            "sessions": {s.session: {**session_meta(s, t), **negatives[s.session]}
                                         for s, t in zip(sources, totals, strict=True)}}
    for name, found in negatives.items():
        if "rounding" in found:
            r = found["rounding"]
            log(f"session {name}: {r['values_set_to_zero']} negative response value(s) of {r['neurons']} neuron(s), "
                f"down to {r['most_negative']:.3g}, are float rounding (within {ROUNDING_RTOL:g} x the neuron's scale): "
                "set to 0")
        if "negative_responses" in found:
            n = found["negative_responses"]
            log(f"session {name}: {n['neurons']} neuron(s) have negative responses beyond float rounding, e.g. trial "
                f"{n['trial']} neuron {n['neuron']}: {n['value']:.3g} (kept; the Poisson loss refuses them)")
    for name, info in meta["sessions"].items():
        if "tiers_left_out" in info:
            log(f"session {name}: tiers left out (not train/validation/test): {info['tiers_left_out']}")
    encode = partial(encode_trial, sources=tuple(sources))
    sizes = [_trial_bytes(s) for s in sources]
    manifests = {}
    for split in ("train", "val", "test"):
        items = [(i, int(t)) for i, s in enumerate(sources) for t in range(len(s.tiers)) if TIERS.get(str(s.tiers[t])) == split]
        if not items:
            continue
        if split == "train":
            random.Random(seed).shuffle(items)  # every shard (and batch) mixes the sessions
        plans = plan_shards(items, max_count=max_trials_per_shard, max_bytes=int(shard_size_mb * 2**20),
                            size_of=lambda it: sizes[it[0]])
        manifests[split] = write_shard_set(out / split, plans, encode, workers=workers,
                                           source=family_source or ", ".join(s.path for s in sources),
                                           meta=meta, split=split, log=log, sources=partial(trial_files, tuple(sources)),
                                           options={"image_scale": [s.image_scale for s in sources]})
    return manifests


def trial_files(sources: Sequence[SessionSource], item: tuple[int, int]) -> list[str]:
    """The files a trial is read from (for the shards' up-to-date check); none if the source is not per-trial files."""
    source, trial = sources[item[0]], item[1]
    files = getattr(source, "trial_files", None)
    return files(trial) if files is not None else []


def reject_options(unknown: dict[str, Any], max_side: int | None, importer: str) -> None:
    """Neural importers take their own options only: a typo must not silently import something else."""
    problems = [f"importer {importer}: unknown option --{k.replace('_', '-')}" for k in unknown]
    if max_side:
        problems.append(f"importer {importer}: --max-side does not apply (use --image-scale)")
    if problems:
        raise ConfigError(problems)


def _trial_bytes(source: SessionSource) -> int:
    return int(np.prod(source.image_shape)) * 4 + source.num_neurons * 4 + 1024
