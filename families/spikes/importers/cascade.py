"""CASCADE ground truth (Rupprecht et al. 2021): one folder per dataset, one MATLAB .mat file per neuron.

Each file holds `CAttached`, a struct array with one element per recording of the neuron: `fluo_time` (s),
`fluo_mean` (dF/F), `events_AP` (spike times in units of 1e-4 s). A neuron with one recording loads as a
single struct, not an array. Elements without fluorescence (electrophysiology-only trials) are skipped with
a warning; a file of any other layout is an error naming the file.

    vislab shard ../shared/data/cascade --out shards/cascade [--val-fraction 0.15] [--span-s 8] [--stride-s 4]
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vislab.core.errors import ConfigError
from vislab.data.importers import Importer
from vislab.data.manifest import Manifest
from vislab.families.spikes.recordings import Recording, split_recording, write_calcium_root, writer_options

EPHYS_TIME_UNIT_S = 1e-4  # events_AP counts ephys samples at 10 kHz
REQUIRED_FIELDS = ("fluo_time", "fluo_mean", "events_AP")


def dataset_dirs(src: Path) -> list[Path]:
    """Dataset folders under `src` (or `src` itself when it directly holds .mat files)."""
    if any(src.glob("*.mat")):
        return [src]
    return sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith(".") and any(d.glob("*.mat")))


def detect(src: Path) -> bool:
    if not src.is_dir():
        return False
    from scipy.io import whosmat  # scipy: slow to import, only for this file format

    for d in dataset_dirs(src)[:1]:
        first = sorted(d.glob("*.mat"))[0]
        try:
            return any(name == "CAttached" for name, _, _ in whosmat(str(first)))
        except (ValueError, OSError, NotImplementedError):
            return False
    return False


def load_neuron(path: Path, dataset: str) -> list[Recording]:
    """All finite recording parts of one neuron file; a file of another layout raises ConfigError naming it."""
    from scipy.io import loadmat  # scipy: slow to import, only for this file format
    from scipy.io.matlab import MatReadError  # scipy: slow to import, only for this file format

    try:
        mat = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except (MatReadError, ValueError, OSError, NotImplementedError, TypeError) as e:
        raise ConfigError([f"{path}: not a readable MATLAB file ({e})"]) from e
    if "CAttached" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ConfigError([f"{path}: no 'CAttached' struct (variables: {', '.join(found) or 'none'}); expected "
                           f"the CASCADE ground-truth layout (CAttached with {', '.join(REQUIRED_FIELDS)})"])
    elements = np.atleast_1d(mat["CAttached"])  # one recording loads as a bare struct
    neuron = path.stem
    out: list[Recording] = []
    for i, el in enumerate(elements):
        fields = getattr(el, "_fieldnames", None)
        if fields is None:
            raise ConfigError([f"{path}: 'CAttached' element {i} is not a struct (got {type(el).__name__})"])
        missing = [f for f in REQUIRED_FIELDS if f not in fields]
        if missing:
            warnings.warn(f"{path}: recording {i} has no {', '.join(missing)} (electrophysiology only?); skipped",
                          stacklevel=2)
            continue
        out.extend(_recording(path, el, dataset, neuron, i))
    if not out:
        raise ConfigError([f"{path}: no recording with {', '.join(REQUIRED_FIELDS)} and finite fluorescence"])
    return out


def _recording(path: Path, el: Any, dataset: str, neuron: str, index: int) -> list[Recording]:
    times = np.asarray(el.fluo_time, dtype=np.float64).ravel()
    trace = np.asarray(el.fluo_mean, dtype=np.float64).ravel()[: len(times)]  # some traces run past their times
    if len(trace) < len(times):
        times = times[: len(trace)]
    finite_t = times[np.isfinite(times)]
    if len(finite_t) < 2:
        warnings.warn(f"{path}: recording {index} has fewer than 2 finite time stamps; skipped", stacklevel=3)
        return []
    # mean frame rate over the recording (CASCADE's convention): a slightly irregular clock does not drift
    frame_rate = (len(finite_t) - 1) / (finite_t[-1] - finite_t[0])
    spikes = np.atleast_1d(np.asarray(el.events_AP, dtype=np.float64)).ravel() * EPHYS_TIME_UNIT_S
    grid = finite_t[0] + (np.arange(len(times)) - int(np.flatnonzero(np.isfinite(times))[0])) / frame_rate
    times = np.where(np.isfinite(times), grid, np.nan)
    return split_recording(dataset, neuron, index, times, trace, frame_rate, spikes)


def load_ground_truth(src: Path, log: Any = print) -> list[Recording]:
    dirs = dataset_dirs(src)
    if not dirs:
        raise ConfigError([f"{src}: no dataset folders with .mat files (expected {src}/<dataset>/<neuron>.mat)"])
    recordings: list[Recording] = []
    for d in dirs:
        files = sorted(d.glob("*.mat"))
        recs = [r for f in files for r in load_neuron(f, d.name)]
        log(f"{d.name}: {len(files)} neurons, {len({(r.neuron, r.recording) for r in recs})} recordings, "
            f"{sum(r.duration_s for r in recs) / 60:.1f} min")
        recordings.extend(recs)
    return recordings


def run(src: Path, out: Path, *, shard_size_mb: float = 256, max_side: int | None = None, workers: int = 4,
        seed: int = 0, log: Any = print, **options: Any) -> dict[str, Manifest]:
    """`vislab shard` entry point (shard size is set in samples: --samples-per-shard; images options unused)."""
    opts = writer_options(options, source=str(src))
    recordings = load_ground_truth(src, log)
    return write_calcium_root(recordings, out, seed=seed, workers=workers, source=str(src.resolve()), log=log, **opts)


IMPORTER = Importer("cascade", detect, run,
                           "CASCADE ground truth: <dataset>/<neuron>.mat with a CAttached struct array "
                           "(options: --val-fraction, --span-s, --stride-s, --samples-per-shard)")
