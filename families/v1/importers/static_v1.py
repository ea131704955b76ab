"""Sinz-lab static recordings (the layout of the SENSORIUM / Lurz et al. 2021 data) -> V1 shard sets.

    vislab shard SESSION_DIR --out DATA                 # one session; its folder name is the session id
    vislab shard DIR_OF_SESSIONS --out DATA             # every session folder inside -> one data root
    vislab shard SRC --out DATA --image-scale 0.25      # resize images while importing (144x256 -> 36x64)

A session folder holds `config.json` ({"links": {"targets": "responses", "inputs": "images"}}), per trial i:
`data/images/<i>.npy` float32 (1, H, W) 0..255, `data/responses/<i>.npy` (neurons,), optional
`data/behavior/<i>.npy` (3,) and `data/pupil_center/<i>.npy` (2,); `meta/trials/tiers.npy` ('train' /
'validation' / 'test' / others, left out), `meta/trials/frame_image_id.npy`, `meta/neurons/unit_ids.npy`,
`meta/neurons/cell_motor_coordinates.npy`, `meta/statistics/...` (the source's own statistics over all tiers;
vislab recomputes them from the training tier). Trials are read one file at a time by parallel workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vislab.core.errors import ConfigError
from vislab.data.importers import Importer
from vislab.data.manifest import Manifest
from vislab.families.v1.importers.neural_trials import (
    OPTIONAL_FIELDS,
    SessionSource,
    reject_options,
    session_key,
    write_sessions,
)


def is_session(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "meta" / "trials" / "tiers.npy").is_file() and (path / "data").is_dir()


def session_dirs(src: Path) -> list[Path]:
    if is_session(src):
        return [src]
    return sorted(d for d in src.iterdir() if d.is_dir() and is_session(d)) if src.is_dir() else []


def detect(src: Path) -> bool:
    return bool(session_dirs(src))


@dataclass
class StaticSession(SessionSource):
    inputs: str = "images"
    targets: str = "responses"

    def _file(self, folder: str, trial: int) -> Path:
        return Path(self.path) / "data" / folder / f"{trial}.npy"

    def trial_files(self, trial: int) -> list[str]:
        return [str(self._file(name, trial)) for name in (self.inputs, self.targets, *self.fields)]

    def read(self, trial: int) -> dict[str, np.ndarray]:
        out = {"image": np.load(self._file(self.inputs, trial), allow_pickle=False),
               "responses": np.load(self._file(self.targets, trial), allow_pickle=False)}
        for name in self.fields:
            out[name] = np.load(self._file(name, trial), allow_pickle=False)
        return out


def _links(path: Path) -> dict[str, str]:
    try:
        config = json.loads((path / "config.json").read_text())
    except ValueError as e:
        raise ConfigError([f"{path / 'config.json'}: not valid JSON ({e})"]) from e
    links = config.get("links", {}) if isinstance(config, dict) else {}
    return {k: str(v) for k, v in links.items()}


def _optional(path: Path) -> np.ndarray | None:
    return np.load(path, allow_pickle=False) if path.is_file() else None


def open_session(path: Path, image_scale: float = 1.0) -> StaticSession:
    """Read a session's per-trial and per-neuron metadata (small arrays) and one trial for the shapes."""
    links = _links(path)
    inputs = next((n for n in (links.get("inputs"), "images") if n and (path / "data" / n).is_dir()), None)
    targets = next((n for n in (links.get("targets"), "responses") if n and (path / "data" / n).is_dir()), None)
    if inputs is None or targets is None:
        raise ConfigError([f"{path}: expected data/images/ and data/responses/ (or the folders config.json links)"])
    tiers = np.load(path / "meta" / "trials" / "tiers.npy", allow_pickle=False).astype(str)
    ids_path = path / "meta" / "trials" / "frame_image_id.npy"
    image_ids = np.load(ids_path, allow_pickle=False).astype(np.int64) if ids_path.is_file() else np.arange(len(tiers))
    if len(image_ids) != len(tiers):
        raise ConfigError([f"{path}: frame_image_id.npy has {len(image_ids)} entries, tiers.npy has {len(tiers)}"])
    unit_ids = _optional(path / "meta" / "neurons" / "unit_ids.npy")
    coordinates = _optional(path / "meta" / "neurons" / "cell_motor_coordinates.npy")
    first = np.load(path / "data" / targets / "0.npy", allow_pickle=False)
    num_neurons = len(unit_ids) if unit_ids is not None else int(first.shape[0])
    if coordinates is not None and len(coordinates) != num_neurons:
        raise ConfigError([f"{path}: cell_motor_coordinates.npy has {len(coordinates)} rows, the session has {num_neurons} neurons"])
    image = np.load(path / "data" / inputs / "0.npy", allow_pickle=False)
    image = image[None] if image.ndim == 2 else image
    shape = (image.shape[0], max(1, round(image.shape[1] * image_scale)), max(1, round(image.shape[2] * image_scale)))
    fields = tuple(f for f in OPTIONAL_FIELDS if (path / "data" / f).is_dir())
    return StaticSession(session=session_key(path.name), path=str(path.resolve()), tiers=tiers, image_ids=image_ids,
                         num_neurons=num_neurons, image_shape=shape, unit_ids=unit_ids, coordinates=coordinates,
                         image_scale=image_scale, fields=fields, inputs=inputs, targets=targets)


def run(src: Path, out: Path, *, shard_size_mb: float = 256, max_side: int | None = None, workers: int = 4,
        seed: int = 0, log: Any = print, image_scale: float | str = 1.0, max_trials_per_shard: int | str = 500,
        **unknown: Any) -> dict[str, Manifest]:
    reject_options(unknown, max_side, "static_v1")
    dirs = session_dirs(src)
    if not dirs:
        raise ConfigError([f"{src}: no static session folder (config.json + data/ + meta/trials/tiers.npy) here or inside"])
    sources = [open_session(d, float(image_scale)) for d in dirs]
    return write_sessions(sources, out, shard_size_mb=shard_size_mb, workers=workers, seed=seed,
                          max_trials_per_shard=int(max_trials_per_shard), family_source=str(src.resolve()), log=log)


IMPORTER = Importer("static_v1", detect, run,
                           "Sinz-lab static V1 sessions (config.json, data/images, data/responses, meta/); "
                           "--image-scale F, --max-trials-per-shard N")
