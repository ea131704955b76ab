"""spikefinder-style CSV ground truth (Berens et al. 2018): `<name>.calcium.csv` + `<name>.spikes.csv`.

One column per neuron (an optional header row of names), one row per frame at `--frame-rate` (spikefinder:
100 Hz); the spikes file holds spike counts per frame. Shorter neurons are NaN-padded at the end. Each
file pair is one dataset, named by the prefix (`1.train.calcium.csv` -> dataset `1.train`).

    vislab shard SRC --format spikefinder --frame-rate 100 --out DIR
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vislab.core.errors import ConfigError
from vislab.data.importers import Importer
from vislab.data.manifest import Manifest
from vislab.families.spikes.recordings import Recording, split_recording, write_calcium_root, writer_options

CALCIUM_SUFFIX = ".calcium.csv"
SPIKES_SUFFIX = ".spikes.csv"


def detect(src: Path) -> bool:
    return src.is_dir() and any(src.glob(f"*{CALCIUM_SUFFIX}"))


CsvHeader = Literal["auto", "yes", "no"]


def read_columns(path: Path, header_mode: CsvHeader = "auto") -> tuple[list[str], np.ndarray]:
    """(column names, (num_columns, num_rows) float array) of a numeric CSV with an optional header row
    (`header_mode`: 'yes' / 'no', or 'auto': see `has_header`)."""
    text = path.read_text().splitlines()
    if not text:
        raise ConfigError([f"{path}: empty file"])
    first = text[0].split(",")
    header = header_mode == "yes" or (header_mode == "auto" and has_header(first, text[1:101], path))
    try:
        values = np.genfromtxt(path, delimiter=",", skip_header=1 if header else 0, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise ConfigError([f"{path}: not a numeric CSV ({str(e).splitlines()[0]})"]) from e
    names = [c.strip().strip('"') for c in first] if header else [str(i) for i in range(values.shape[1])]
    if len(names) != values.shape[1]:
        raise ConfigError([f"{path}: header has {len(names)} columns, the data {values.shape[1]}"])
    return names, values.T


def has_header(first: list[str], rows: list[str], path: Path) -> bool:
    """Is the first row a header? Names are; so are neuron ids: distinct whole numbers (spikefinder's 0..n-1,
    or 1..n) above rows that hold fractions (dF/F). A numeric first row read as a header is said loudly."""
    if any(_not_number(c) for c in first):
        return True
    ids = _whole_numbers(first)
    if ids is None or len(set(ids)) != len(ids):
        return False
    sequence = ids in (list(range(len(ids))), list(range(1, len(ids) + 1)))
    fractional = any(_whole_numbers(r.split(",")) is None for r in rows if r.strip())
    if (sequence and len(ids) > 1) or fractional:
        warnings.warn(f"{path}: the first row ({','.join(c.strip() for c in first[:6])}{',...' if len(first) > 6 else ''}) "
                      "looks like neuron ids and is read as a header, not as a frame (--csv-header no reads it as data)",
                      stacklevel=3)
        return True
    return False


def _whole_numbers(cells: list[str]) -> list[int] | None:
    try:
        values = [float(c.strip().strip('"')) for c in cells]
    except ValueError:
        return None
    return [int(v) for v in values] if all(v.is_integer() for v in values) else None


def _not_number(cell: str) -> bool:
    try:
        float(cell)
        return False
    except ValueError:
        return cell.strip() != ""


def load_pair(calcium: Path, frame_rate: float) -> list[Recording]:
    dataset = calcium.name[: -len(CALCIUM_SUFFIX)]
    spikes_path = calcium.with_name(dataset + SPIKES_SUFFIX)
    if not spikes_path.is_file():
        raise ConfigError([f"{calcium}: no matching spikes file {spikes_path.name}"])
    names, traces = read_columns(calcium)
    _, counts = read_columns(spikes_path)
    if counts.shape[0] != traces.shape[0]:
        raise ConfigError([f"{spikes_path}: {counts.shape[0]} neurons, {calcium.name} has {traces.shape[0]}"])
    out = []
    for i, (name, x, c) in enumerate(zip(names, traces, counts, strict=True)):
        c = np.nan_to_num(c[: len(x)], nan=0.0)
        if np.any(c < 0) or np.any(c != np.round(c)):
            raise ConfigError([f"{spikes_path}: neuron {name} (column {i}) has non-integer or negative spike counts"])
        frames = np.repeat(np.arange(len(c)), c.astype(np.int64))
        out.extend(split_recording(dataset, f"neuron{name}", 0, None, x, frame_rate, frames / frame_rate))
    return out


def run(src: Path, out: Path, *, shard_size_mb: float = 256, max_side: int | None = None, workers: int = 4,
        seed: int = 0, log: Any = print, **options: Any) -> dict[str, Manifest]:
    if "frame_rate" not in options:
        raise ConfigError([f"{src}: spikefinder CSVs carry no time stamps; give --frame-rate (spikefinder: 100)"])
    frame_rate = float(options["frame_rate"])
    opts = writer_options(options, source=str(src), extra=("frame_rate",))
    recordings = []
    for calcium in sorted(src.glob(f"*{CALCIUM_SUFFIX}")):
        recs = load_pair(calcium, frame_rate)
        log(f"{calcium.name}: {len({r.neuron for r in recs})} neurons at {frame_rate:g} Hz")
        recordings.extend(recs)
    return write_calcium_root(recordings, out, seed=seed, workers=workers, source=str(src.resolve()), log=log, **opts)


IMPORTER = Importer("spikefinder", detect, run,
                           "spikefinder CSV pairs <name>.calcium.csv/<name>.spikes.csv, one column per neuron "
                           "(needs --frame-rate)")
