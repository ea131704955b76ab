"""Neural recordings as arrays in NPZ or HDF5 files -> V1 shard sets (one file = one session).

    vislab shard recording.h5 --out DATA             # session id = file name without extension
    vislab shard DIR_OF_FILES --out DATA --format neural_arrays

Arrays (first axis = trials unless noted): `images` (T, H, W) or (T, C, H, W); `responses` (T, neurons);
`tiers` (T,) strings 'train' / 'validation' / 'test'; optional `image_ids` (T,) int (repeats share an id; without
it every trial is its own image and the repeat-based test measures are left out), `behavior` (T, k),
`pupil_center` (T, 2), `unit_ids` (neurons,), `cell_motor_coordinates` (neurons, 3).

HDF5 datasets are read one trial at a time; an NPZ member is read whole once per worker process (zip members
cannot be sliced), so use HDF5 for recordings larger than memory.
"""

from __future__ import annotations

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

SUFFIXES = {".npz", ".h5", ".hdf5"}
REQUIRED = ("images", "responses", "tiers")
_OPEN: dict[str, Any] = {}
"""Per-process cache of open files (HDF5) and loaded arrays (NPZ), keyed by path."""


def _open(path: str) -> Any:
    if path not in _OPEN:
        if path.endswith(".npz"):
            _OPEN[path] = {}  # filled member by member
        else:
            import h5py  # h5py: only for HDF5 files

            _OPEN[path] = h5py.File(path, "r")
    return _OPEN[path]


def close_all() -> None:
    for handle in _OPEN.values():
        if hasattr(handle, "close"):
            handle.close()
    _OPEN.clear()


def _array(path: str, key: str) -> Any:
    """An indexable array: an h5py dataset (lazy) or a loaded NPZ member (cached)."""
    handle = _open(path)
    if path.endswith(".npz"):
        if key not in handle:
            with np.load(path, allow_pickle=False) as z:
                handle[key] = z[key]
        return handle[key]
    return handle[key]


def _keys(path: Path) -> set[str]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return set(z.files)
    import h5py  # h5py: only for HDF5 files

    with h5py.File(path, "r") as f:
        return set(f.keys())


def files_of(src: Path) -> list[Path]:
    if src.is_file():
        return [src] if src.suffix.lower() in SUFFIXES else []
    return sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES) if src.is_dir() else []


def detect(src: Path) -> bool:
    try:
        return any(set(REQUIRED) <= _keys(p) for p in files_of(src))
    except (OSError, ValueError):
        return False


@dataclass
class ArraySession(SessionSource):
    def trial_files(self, trial: int) -> list[str]:
        return [self.path]  # one file holds every trial: hashed once per shard

    def read(self, trial: int) -> dict[str, np.ndarray]:
        out = {"image": np.asarray(_array(self.path, "images")[trial], dtype=np.float32),
               "responses": np.asarray(_array(self.path, "responses")[trial])}
        for name in self.fields:
            out[name] = np.asarray(_array(self.path, name)[trial])
        return out


def _strings(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values])


def open_file(path: Path, image_scale: float = 1.0) -> ArraySession:
    keys = _keys(path)
    missing = [k for k in REQUIRED if k not in keys]
    if missing:
        raise ConfigError([f"{path}: missing array(s) {missing} (needs {', '.join(REQUIRED)})"])
    p = str(path.resolve())
    tiers = _strings(np.asarray(_array(p, "tiers")[()]))
    images, responses = _array(p, "images"), _array(p, "responses")
    if images.ndim not in (3, 4) or responses.ndim != 2:
        raise ConfigError([f"{path}: images must be (T, H, W) or (T, C, H, W) and responses (T, neurons); "
                           f"got {tuple(images.shape)} and {tuple(responses.shape)}"])
    for name, arr in (("images", images), ("responses", responses)):
        if arr.shape[0] != len(tiers):
            raise ConfigError([f"{path}: {name} has {arr.shape[0]} trials, tiers has {len(tiers)}"])
    image_ids = np.asarray(_array(p, "image_ids")[()], np.int64) if "image_ids" in keys else np.arange(len(tiers))
    shape = (1, *images.shape[1:]) if images.ndim == 3 else tuple(images.shape[1:])
    shape = (shape[0], max(1, round(shape[1] * image_scale)), max(1, round(shape[2] * image_scale)))
    optional = {k: np.asarray(_array(p, k)[()]) for k in ("unit_ids", "cell_motor_coordinates") if k in keys}
    return ArraySession(session=session_key(path.stem), path=p, tiers=tiers, image_ids=image_ids,
                        num_neurons=int(responses.shape[1]), image_shape=shape, unit_ids=optional.get("unit_ids"),
                        coordinates=optional.get("cell_motor_coordinates"), image_scale=image_scale,
                        fields=tuple(f for f in OPTIONAL_FIELDS if f in keys))


def run(src: Path, out: Path, *, shard_size_mb: float = 256, max_side: int | None = None, workers: int = 4,
        seed: int = 0, log: Any = print, image_scale: float | str = 1.0, max_trials_per_shard: int | str = 500,
        **unknown: Any) -> dict[str, Manifest]:
    reject_options(unknown, max_side, "neural_arrays")
    files = files_of(src)
    if not files:
        raise ConfigError([f"{src}: no .npz / .h5 / .hdf5 recording here"])
    sources = [open_file(f, float(image_scale)) for f in files]
    close_all()  # workers open their own handles (an h5py file does not survive a fork)
    return write_sessions(sources, out, shard_size_mb=shard_size_mb, workers=workers, seed=seed,
                          max_trials_per_shard=int(max_trials_per_shard), family_source=str(src.resolve()), log=log)


IMPORTER = Importer("neural_arrays", detect, run,
                           "NPZ/HDF5 recordings (images, responses, tiers, image_ids, ...), one file per session")
