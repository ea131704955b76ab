"""Reading a user's dF/F traces for `vislab infer`: NPY, HDF5, CSV or MATLAB, checked before any work.

The array must be 2-D, (num_neurons, T) at the recording's frame rate (CSV: one column per neuron, as in
spikefinder). Problems are ConfigErrors naming the file; NaN stretches and dead neurons are warnings
naming the neurons (their output is NaN there, the rest is inferred).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from vislab.core.errors import ConfigError
from vislab.families.spikes.calcium import finite_stretches
from vislab.families.spikes.importers.spikefinder import CsvHeader, read_columns

SUFFIXES = (".npy", ".h5", ".hdf5", ".csv", ".mat")


def read_traces(path: Path, key: str | None = None, transpose: bool = False, csv_header: CsvHeader = "auto") -> np.ndarray:
    """(num_neurons, T) float64 traces from `path`; `key` names the array inside HDF5/MATLAB files;
    `csv_header`: does a CSV's first row hold names/neuron ids ('auto' detects it and says so)."""
    if not path.is_file():
        raise ConfigError([f"traces file not found: {path}"])
    if path.stat().st_size == 0:
        raise ConfigError([f"{path}: empty file (0 bytes)"])
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _read_npy(path)
    elif suffix in (".h5", ".hdf5"):
        array = _read_h5(path, key)
    elif suffix == ".csv":
        array = read_columns(path, csv_header)[1]  # columns are neurons
    elif suffix == ".mat":
        array = _read_mat(path, key)
    else:
        raise ConfigError([f"{path}: unsupported traces format '{suffix}' (use {', '.join(SUFFIXES)})"])
    array = array.T if transpose else array
    return check_traces(array, path)


def check_traces(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype.kind not in "fiub":
        raise ConfigError([f"{path}: traces must be numeric, got dtype {array.dtype}"])
    if array.ndim != 2:
        hint = " (one neuron? reshape it to (1, T))" if array.ndim == 1 else ""
        raise ConfigError([f"{path}: expected a 2-D array (num_neurons, T), got shape {tuple(array.shape)}{hint}"])
    if array.size == 0:
        raise ConfigError([f"{path}: the traces array is empty (shape {tuple(array.shape)})"])
    if array.shape[0] > array.shape[1]:
        warnings.warn(f"{path}: {array.shape[0]} neurons but only {array.shape[1]} frames: is it (T, num_neurons)? "
                      "(--transpose flips it)", stacklevel=2)
    return array.astype(np.float64)


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:  # pickled objects, truncated or foreign files
        raise ConfigError([f"{path}: not a plain numeric .npy array ({type(e).__name__}: {e})"]) from e


def _read_h5(path: Path, key: str | None) -> np.ndarray:
    import h5py  # h5py: only for HDF5 files

    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        if key is None:
            if len(names) != 1:
                raise ConfigError([f"{path}: holds {len(names)} datasets ({', '.join(names[:8]) or 'none'}); "
                                   "name one with --key"])
            key = names[0]
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise ConfigError([f"{path}: no dataset '{key}' (datasets: {', '.join(names[:8]) or 'none'})"])
        return np.asarray(f[key][()])


def _read_mat(path: Path, key: str | None) -> np.ndarray:
    from scipy.io import loadmat  # scipy: slow to import, only for this file format
    from scipy.io.matlab import MatReadError  # scipy: slow to import, only for this file format

    try:
        mat = loadmat(str(path), squeeze_me=False)
    except (MatReadError, ValueError, OSError, NotImplementedError, TypeError) as e:
        raise ConfigError([f"{path}: not a readable MATLAB file ({e}); v7.3 files are HDF5: rename to .h5"]) from e
    variables = {k: v for k, v in mat.items() if not k.startswith("__")}
    if key is None:
        if "CAttached" in variables:
            raise ConfigError([f"{path}: a CASCADE ground-truth file (CAttached), not a traces matrix: shard it "
                               "with `vislab shard --format cascade` and evaluate with `vislab test`"])
        numeric = [k for k, v in variables.items() if isinstance(v, np.ndarray) and v.dtype.kind in "fiu" and v.ndim == 2]
        if len(numeric) != 1:
            found = ", ".join(f"{k} {getattr(v, 'shape', '')}" for k, v in variables.items()) or "none"
            raise ConfigError([f"{path}: expected one 2-D numeric variable (num_neurons, T), found {found}; "
                               "name it with --key"])
        key = numeric[0]
    if key not in variables:
        raise ConfigError([f"{path}: no variable '{key}' (variables: {', '.join(variables) or 'none'})"])
    return np.asarray(variables[key])


def describe_gaps(traces: np.ndarray, path: Path, min_frames: int) -> list[str]:
    """Warnings about neurons whose output will be (partly) NaN, naming the neurons."""
    out = []
    dead, gappy, short = [], [], []
    for i, x in enumerate(traces):
        finite = np.isfinite(x)
        if not finite.any():
            dead.append(i)
            continue
        if not finite.all():
            gappy.append(f"{i} ({int((~finite).sum())} frames)")
        if not finite_stretches(x, min_frames):
            short.append(i)
    if dead:
        out.append(f"{path}: neuron(s) {_first(dead)} have no finite frames; their output is NaN")
    if gappy:
        out.append(f"{path}: neuron(s) {_first(gappy)} have NaN/Inf stretches; output is NaN there and within "
                   "half a window of them, inferred elsewhere")
    if short:
        out.append(f"{path}: neuron(s) {_first(short)} have no finite stretch of {min_frames} frames (one window); "
                   "their output is NaN")
    return out


def _first(items: list, n: int = 5) -> str:
    head = ", ".join(str(i) for i in items[:n])
    return head + (f" and {len(items) - n} more" if len(items) > n else "")
