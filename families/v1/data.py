"""Neural-response samples: decode and normalise one trial, and group a mixed batch by recording session.

The generic reader mixes sessions in a batch (training shards interleave them). `collate_sessions` groups the
decoded trials so the model runs each session's readout on its own trials:

    {"sessions": {session_id: {"images": (b, C, H, W) float32, "responses": (b, neurons) float32,
                               "trial": (b,) int64, "image_id": (b,) int64}},
     "size": B}

Normalisation follows neuralpredictors' `NeuroNormalizer` (Sinz lab), with statistics of the training tier
stored in the manifest by the importer: images (x - mean) / std with the session's pixel mean and std;
responses divided by each neuron's std (neurons with std below 1% of the mean std are divided by that floor),
which keeps them non-negative for the Poisson loss. Every trial is checked against its session: an unknown
session, a wrong neuron count, NaN responses or a wrong image size is a ShardError naming session and trial.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vislab.data.manifest import ShardError


@dataclass(frozen=True)
class SessionStats:
    """What decoding needs to know about one session (picklable; built from the manifest's meta)."""

    num_neurons: int
    image_shape: tuple[int, ...]
    image_mean: float
    image_std: float
    response_scale: np.ndarray
    """(neurons,) float32 multiplier of the raw responses (1 / std, floored)."""


def response_scale(std: list[float] | np.ndarray) -> np.ndarray:
    """Per-neuron precision 1 / std, with std floored at 1% of the mean std (NeuroNormalizer's threshold)."""
    s = np.asarray(std, dtype=np.float64)
    floor = 0.01 * float(np.nanmean(s)) if len(s) else 1.0
    return (1.0 / np.maximum(s, max(floor, 1e-12))).astype(np.float32)


def session_stats(meta: dict[str, Any], normalize_images: bool = True, normalize_responses: bool = True) -> dict[str, SessionStats]:
    """SessionStats of every session in a neural manifest's meta."""
    out = {}
    for name, info in meta["sessions"].items():
        st = info["statistics"]
        n = int(info["num_neurons"])
        out[name] = SessionStats(
            num_neurons=n,
            image_shape=tuple(info["image_shape"]),
            image_mean=float(st["images"]["mean"]) if normalize_images else 0.0,
            image_std=float(st["images"]["std"]) if normalize_images and st["images"]["std"] > 0 else 1.0,
            response_scale=response_scale(st["responses"]["std"]) if normalize_responses else np.ones(n, np.float32),
        )
    return out


def _npy(sample: dict[str, Any], name: str, where: str) -> np.ndarray:
    if name not in sample:
        raise ShardError(f"{where}: no '{name}' field (fields: {sorted(k for k in sample if not k.startswith('__'))})")
    return np.load(io.BytesIO(sample[name]), allow_pickle=False)


@dataclass
class NeuralDecode:
    """Picklable decode step: raw tar fields of one trial -> checked, normalised tensors."""

    sessions: dict[str, SessionStats]

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        key = sample.get("__key__")
        info = json.loads(sample["json"]) if "json" in sample else {}
        session, trial = info.get("session"), info.get("trial")
        where = f"session {session} trial {trial} (sample {key} in {sample.get('__url__')})"
        stats = self.sessions.get(str(session))
        if stats is None:
            raise ShardError(f"{where}: session not in the training manifest (known: {sorted(self.sessions)[:10]})")
        image = _npy(sample, "image.npy", where)
        if tuple(image.shape) != stats.image_shape:
            raise ShardError(f"{where}: image has shape {tuple(image.shape)}, the session's images are {stats.image_shape}")
        responses = _npy(sample, "responses.npy", where)
        if responses.shape != (stats.num_neurons,):
            raise ShardError(f"{where}: responses have shape {responses.shape}, the session's readout has "
                             f"{stats.num_neurons} neurons")
        if not np.isfinite(responses).all():
            raise ShardError(f"{where}: responses are NaN/Inf at neuron index {int(np.flatnonzero(~np.isfinite(responses))[0])}")
        image = (image.astype(np.float32) - stats.image_mean) / stats.image_std
        return {
            "session": str(session),
            "image": torch.from_numpy(image),
            "responses": torch.from_numpy(responses.astype(np.float32) * stats.response_scale),
            "trial": int(trial) if trial is not None else -1,
            "image_id": int(info.get("image_id", -1)),
        }


def collate_sessions(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Group decoded trials by session (order of first appearance) and stack each group."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        groups.setdefault(s["session"], []).append(s)
    return {
        "sessions": {
            name: {
                "images": torch.stack([s["image"] for s in group]),
                "responses": torch.stack([s["responses"] for s in group]),
                "trial": torch.tensor([s["trial"] for s in group], dtype=torch.int64),
                "image_id": torch.tensor([s["image_id"] for s in group], dtype=torch.int64),
            }
            for name, group in groups.items()
        },
        "size": len(samples),
    }
