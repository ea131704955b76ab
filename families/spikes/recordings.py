"""Ground-truth recordings (dF/F + spike times) -> one calcium data root, written per dataset.

Every importer (CASCADE .mat, spikefinder CSV, the simulator) produces `Recording`s; this module writes

    root/train/  training samples: overlapping `span_s` pieces of the training neurons' recordings at their
                 own frame rate, with the spike times around them (resampling, noise and the window crop
                 happen in the loader, differently every epoch: data/spike_samples.py)
    root/val/    whole recordings of the validation neurons (a per-neuron split inside every dataset)
    root/test/   whole recordings of every neuron of every dataset (leave-one-dataset-out evaluation and
                 `vislab test`; neurons a model trained on are flagged and left out of its summary means)

Every shard holds one dataset only and the manifests map shard -> dataset (`meta.shard_datasets`), so a
run can select, exclude and re-weight datasets without rewriting shards. `meta.datasets` lists each
dataset's neurons, split, frame rates and noise levels.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vislab.core.errors import ConfigError
from vislab.data.manifest import Manifest
from vislab.data.shards import write_shard_set
from vislab.families.spikes.calcium import finite_stretches, noise_level

SPIKE_PAD_S = 1.0  # spikes kept beyond a training piece, so smoothing the target is right at its edges


@dataclass
class Recording:
    """One uninterrupted recording of one neuron: finite dF/F at a regular frame rate, and its spikes."""

    dataset: str
    neuron: str
    recording: int
    """Index of the recording within the neuron's file (a CAttached element, a CSV column, ...)."""
    part: int
    """Finite stretch of that recording (NaN gaps split a recording into parts)."""
    trace: np.ndarray
    """(n,) dF/F, float32, all finite."""
    frame_rate: float
    spike_times: np.ndarray
    """Spike times (s) relative to the centre of frame 0."""
    noise_level: float
    """nu of the whole source recording (all its parts)."""
    t0: float = 0.0
    """Source time of frame 0 (s), for reference."""

    @property
    def duration_s(self) -> float:
        return len(self.trace) / self.frame_rate


def split_recording(dataset: str, neuron: str, recording: int, times: np.ndarray | None, trace: np.ndarray,
                    frame_rate: float, spike_times: np.ndarray) -> list[Recording]:
    """A source recording (NaN gaps allowed; times default to k / frame_rate) -> its finite parts."""
    trace = np.asarray(trace, dtype=np.float64).ravel()
    times = np.arange(len(trace)) / frame_rate if times is None else np.asarray(times, dtype=np.float64).ravel()
    good = np.where(np.isfinite(times), trace, np.nan)
    nu = float(noise_level(good, frame_rate))
    spikes = np.asarray(spike_times, dtype=np.float64).ravel()
    spikes = spikes[np.isfinite(spikes)]
    parts = []
    for i, (a, b) in enumerate(finite_stretches(good, min_length=2)):
        t0 = float(times[a])
        parts.append(Recording(dataset, neuron, recording, i, good[a:b].astype(np.float32), frame_rate,
                               np.sort(spikes - t0), nu, t0))
    return parts


def split_neurons(neurons: dict[str, list[str]], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Validation neurons per dataset: a seeded `val_fraction` of each dataset's neurons (at least one when
    the dataset has 3 or more, none for smaller ones, so every dataset keeps training neurons)."""
    out = {}
    for ds, names in sorted(neurons.items()):
        names = sorted(set(names))
        n_val = max(1, round(val_fraction * len(names))) if len(names) >= 3 and val_fraction > 0 else 0
        out[ds] = sorted(random.Random(f"{seed}/{ds}").sample(names, n_val))
    return out


@dataclass(repr=False)
class CalciumItem:
    """One sample to write (picklable for the shard writer's processes); repr = a content digest, so the
    writer's resume fingerprint changes exactly when the data does."""

    key: str
    trace: np.ndarray
    spikes: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        h = hashlib.sha256(self.trace.tobytes() + self.spikes.tobytes() + repr(sorted(self.info.items())).encode())
        return f"CalciumItem({self.key}, {h.hexdigest()[:16]})"


def encode_item(item: CalciumItem) -> dict[str, Any]:
    return {"__key__": item.key, "trace.npy": item.trace.astype(np.float32),
            "spikes.npy": item.spikes.astype(np.float64), "json": item.info}


def _info(r: Recording) -> dict[str, Any]:
    return {"dataset": r.dataset, "neuron": r.neuron, "recording": r.recording, "part": r.part,
            "frame_rate": r.frame_rate, "noise_level": r.noise_level, "t0": r.t0}


def _key(r: Recording, piece: int | None = None) -> str:
    # webdataset splits member names at the first dot: keys must not contain one
    key = f"{r.dataset}__{r.neuron}__r{r.recording:03d}p{r.part:02d}" + ("" if piece is None else f"__s{piece:05d}")
    return key.replace(".", "_").replace("/", "_").replace(" ", "_")


def training_pieces(r: Recording, span_s: float, stride_s: float) -> list[CalciumItem]:
    """Overlapping pieces of `span_s` seconds every `stride_s` (the last one flush with the end)."""
    n = len(r.trace)
    span, stride = max(2, round(span_s * r.frame_rate)), max(1, round(stride_s * r.frame_rate))
    starts = list(range(0, max(1, n - span + 1), stride))
    if n > span and starts[-1] != n - span:
        starts.append(n - span)
    items = []
    for i, s in enumerate(starts):
        lo, hi = (s - 0.5) / r.frame_rate - SPIKE_PAD_S, (min(n, s + span) - 0.5) / r.frame_rate + SPIKE_PAD_S
        spikes = r.spike_times[(r.spike_times >= lo) & (r.spike_times < hi)] - s / r.frame_rate
        items.append(CalciumItem(_key(r, i), r.trace[s:s + span], spikes, {**_info(r), "start": s}))
    return items


def whole_recording(r: Recording) -> CalciumItem:
    return CalciumItem(_key(r), r.trace, r.spike_times, _info(r))


def dataset_summary(recs: list[Recording], val: list[str]) -> dict[str, Any]:
    rates = [r.frame_rate for r in recs]
    nus = [r.noise_level for r in recs if np.isfinite(r.noise_level)]
    neurons = sorted({r.neuron for r in recs})
    return {
        "neurons": len(neurons),
        "train_neurons": [n for n in neurons if n not in val],
        "val_neurons": [n for n in neurons if n in val],
        "recordings": len({(r.neuron, r.recording) for r in recs}),
        "duration_s": round(sum(r.duration_s for r in recs), 2),
        "spikes": int(sum(len(r.spike_times) for r in recs)),
        "frame_rate": float(np.median(rates)),
        "frame_rate_range": [float(min(rates)), float(max(rates))],
        "noise_level": float(np.median(nus)) if nus else None,
        "noise_level_range": [float(min(nus)), float(max(nus))] if nus else None,
    }


def write_calcium_root(recordings: list[Recording], out: Path, *, val_fraction: float = 0.15, seed: int = 0,
                       span_s: float = 8.0, stride_s: float = 4.0, min_train_s: float = 3.0,
                       samples_per_shard: int = 256, workers: int = 1, source: str = "",
                       log: Callable[[str], None] = print) -> dict[str, Manifest]:
    """Write train/ val/ test/ shard sets (see the module docstring); returns their manifests."""
    by_ds: dict[str, list[Recording]] = defaultdict(list)
    for r in recordings:
        by_ds[r.dataset].append(r)
    val = split_neurons({ds: [r.neuron for r in recs] for ds, recs in by_ds.items()}, val_fraction, seed)
    datasets = {ds: dataset_summary(recs, val[ds]) for ds, recs in sorted(by_ds.items())}
    per_split: dict[str, dict[str, list[CalciumItem]]] = {"train": {}, "val": {}, "test": {}}
    for ds, recs in sorted(by_ds.items()):
        train = [r for r in recs if r.neuron not in val[ds] and r.duration_s >= min_train_s]
        per_split["train"][ds] = [it for r in train for it in training_pieces(r, span_s, stride_s)]
        random.Random(f"{seed}/{ds}/order").shuffle(per_split["train"][ds])  # any shard is a fair sample
        per_split["val"][ds] = [whole_recording(r) for r in recs if r.neuron in val[ds]]
        per_split["test"][ds] = [whole_recording(r) for r in recs]
    manifests = {}
    for split, items_by_ds in per_split.items():
        plans: list[list[CalciumItem]] = []
        shard_datasets: dict[str, str] = {}
        per_shard = samples_per_shard if split == "train" else max(1, samples_per_shard // 8)
        for ds, items in items_by_ds.items():
            for i in range(0, len(items), per_shard):
                shard_datasets[f"shard-{len(plans):06d}.tar"] = ds
                plans.append(items[i:i + per_shard])
        if not plans:
            raise ConfigError([f"{source}: no {split} samples (recordings shorter than {min_train_s} s, or no neurons)"])
        meta = {"family": "calcium", "kind": "pieces" if split == "train" else "recordings", "datasets": datasets,
                "shard_datasets": shard_datasets, "span_s": span_s, "stride_s": stride_s, "val_fraction": val_fraction}
        manifests[split] = write_shard_set(out / split, plans, encode_item, workers=workers, source=source,
                                           meta=meta, split=split, log=log)
    return manifests


WRITER_OPTIONS = {"val_fraction": float, "span_s": float, "stride_s": float, "samples_per_shard": int,
                  "min_train_s": float}


def writer_options(options: dict[str, Any], source: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Typed `--key value` options of the calcium importers; an unknown or malformed one is a ConfigError."""
    out, problems = {}, []
    for key, value in options.items():
        if key in extra:
            continue
        if key not in WRITER_OPTIONS:
            valid = ", ".join("--" + k.replace("_", "-") for k in (*WRITER_OPTIONS, *extra))
            problems.append(f"{source}: unknown option --{key.replace('_', '-')} (valid: {valid})")
            continue
        try:
            out[key] = WRITER_OPTIONS[key](value)
        except ValueError:
            problems.append(f"{source}: --{key.replace('_', '-')} expects a number, got {value!r}")
    if problems:
        raise ConfigError(problems)
    return out

