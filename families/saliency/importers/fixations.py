"""Eye-fixation data sets -> image + fixation shards for `task: saliency`.

    vislab shard ../shared/data/osie --out shards/osie                      # OSIE: stimuli/*.jpg + fixations.mat
    vislab shard fixations.csv --out shards/mine --format fixations-csv \\
        [--images DIR] [--coords pixels|pixels1|normalized]               # any free-viewing set as a CSV

The CSV has a header with at least `image,x,y` (image paths relative to --images, default the CSV's folder)
and optionally `subject` and `split` (train/val/test; otherwise images are split at random by
--val-fraction / --test-fraction with --seed). Coordinates: `pixels` = 0-based pixel indices (default),
`pixels1` = 1-based (MATLAB), `normalized` = already x/width, y/height in [0, 1].

Each sample: the image bytes (re-encoded only with --max-side), `fix.npy` float32 (N, 2) normalised x, y
in [0, 1) (pixel centre / image size), `subject.npy` int16 (N,), `json` {width, height, image}. Whole images
go to one split, so validation and test measure generalisation to unseen images.
"""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from vislab.core.errors import ConfigError
from vislab.data.importers import Importer
from vislab.data.importers.imagefolder import encode_image
from vislab.data.manifest import Manifest
from vislab.data.shards import encode_npy, plan_shards, write_shard_set

Coords = Literal["pixels", "pixels1", "normalized"]
COORDINATES = "x, y in [0, 1): (pixel centre) / (width, height), origin top-left"


def normalise(x: np.ndarray, y: np.ndarray, width: int, height: int, coords: Coords) -> np.ndarray:
    """(N, 2) float32 normalised coordinates from the source convention, clipped into the image."""
    if coords == "pixels":
        u, v = (x + 0.5) / width, (y + 0.5) / height
    elif coords == "pixels1":
        u, v = (x - 0.5) / width, (y - 0.5) / height
    else:
        u, v = x, y
    return np.clip(np.stack([u, v], axis=1), 0.0, 1.0 - 1e-6).astype(np.float32)


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def assign_splits(names: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """A seeded random split of whole images."""
    order = sorted(names)
    random.Random(seed).shuffle(order)
    n_val, n_test = round(len(order) * val_fraction), round(len(order) * test_fraction)
    return {n: ("test" if i < n_test else "val" if i < n_test + n_val else "train") for i, n in enumerate(order)}


def encode_sample(item: tuple[str, bytes, bytes, int, int], root: str, max_side: int | None) -> dict[str, Any]:
    rel, fix, subjects, width, height = item
    sample = encode_image((rel, 0), root=root, max_side=max_side)
    sample.pop("cls")
    sample["fix.npy"] = np.load(io.BytesIO(fix))
    sample["subject.npy"] = np.load(io.BytesIO(subjects))
    sample["json"] = {"width": width, "height": height, "image": rel}
    return sample


def write_splits(root: Path, out: Path, records: dict[str, tuple[np.ndarray, np.ndarray]], splits: dict[str, str], *,
                 source_format: str, shard_size_mb: float, max_side: int | None, workers: int,
                 log: Any) -> dict[str, Manifest]:
    """records: image path (relative to root) -> (fixations (N, 2), subjects (N,)); one shard set per split."""
    manifests = {}
    for split in ("train", "val", "test"):
        names = sorted(n for n in records if splits[n] == split)
        if not names:
            continue
        items = []
        for n in names:
            fix, subj = records[n]
            w, h = image_size(root / n)
            items.append((n, encode_npy(fix), encode_npy(subj.astype(np.int16)), w, h))
        plans = plan_shards(items, max_bytes=int(shard_size_mb * 2**20), size_of=partial(_file_size, root))
        meta = {"family": "fixations", "source_format": source_format, "coordinates": COORDINATES,
                "num_images": len(names), "num_fixations": int(sum(len(records[n][0]) for n in names))}
        manifests[split] = write_shard_set(out / split, plans, partial(encode_sample, root=str(root), max_side=max_side),
                                           workers=workers, source=str(root.resolve()), meta=meta, split=split, log=log)
    return manifests


def _file_size(root: Path, item: tuple[Any, ...]) -> int:
    return (root / item[0]).stat().st_size


# ------------------------------------------------------------------------------------------------ OSIE
def detect_osie(src: Path) -> bool:
    return (src / "fixations.mat").is_file() and (src / "stimuli").is_dir()


def read_osie(src: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """'stimuli/<name>' -> (fixations (N, 2) normalised, subject ids (N,)) from OSIE's fixations.mat."""
    from scipy.io import loadmat  # scipy: slow to import, only for this file format

    entries = np.atleast_1d(loadmat(src / "fixations.mat", squeeze_me=True, struct_as_record=False)["fixations"])
    stimuli = sorted(p.name for p in (src / "stimuli").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(entries) != len(stimuli):
        raise ConfigError([f"{src}/fixations.mat has {len(entries)} entries but stimuli/ holds {len(stimuli)} images"])
    records = {}
    for entry, name in zip(entries, stimuli, strict=True):
        if str(entry.img) != name:
            raise ConfigError([f"{src}/fixations.mat: entry for '{entry.img}' is where '{name}' was expected (sorted order)"])
        w, h = image_size(src / "stimuli" / name)
        xs, ys, subj = [], [], []
        for s, subject in enumerate(np.atleast_1d(entry.subjects)):
            x, y = np.atleast_1d(subject.fix_x).astype(np.float64), np.atleast_1d(subject.fix_y).astype(np.float64)
            xs.append(x)
            ys.append(y)
            subj.append(np.full(len(x), s))
        # OSIE stores MATLAB 1-based pixel coordinates
        records[f"stimuli/{name}"] = (normalise(np.concatenate(xs), np.concatenate(ys), w, h, "pixels1"),
                                      np.concatenate(subj))
    return records


def run_osie(src: Path, out: Path, *, shard_size_mb: float = 256, max_side: int | None = None, workers: int = 4,
             seed: int = 0, val_fraction: str | float = 0.15, test_fraction: str | float = 0.15, log: Any = print,
             **_: Any) -> dict[str, Manifest]:
    records = read_osie(src)
    splits = assign_splits(list(records), float(val_fraction), float(test_fraction), seed)
    return write_splits(src, out, records, splits, source_format="osie", shard_size_mb=shard_size_mb,
                        max_side=max_side, workers=workers, log=log)


# ------------------------------------------------------------------------------------------------- CSV
def detect_csv(src: Path) -> bool:
    if not (src.is_file() and src.suffix.lower() == ".csv"):
        return False
    with open(src, newline="") as f:
        header = next(csv.reader(f), [])
    return {"image", "x", "y"} <= {h.strip() for h in header}


def read_csv(path: Path, images: Path, coords: Coords) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    rows: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    given_split: dict[str, str] = {}
    subjects: dict[str, int] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image", "x", "y"} - set(reader.fieldnames or [])
        if missing:
            raise ConfigError([f"{path}: missing columns {sorted(missing)} (header: {reader.fieldnames})"])
        for i, row in enumerate(reader, start=2):
            try:
                x, y = float(row["x"]), float(row["y"])
            except ValueError as e:
                raise ConfigError([f"{path}:{i}: x/y not numbers ({row['x']!r}, {row['y']!r})"]) from e
            subject = subjects.setdefault(row.get("subject") or "", len(subjects))
            rows[row["image"]].append((x, y, subject))
            if row.get("split"):
                given_split[row["image"]] = row["split"]
    records = {}
    for name, fixes in rows.items():
        if not (images / name).is_file():
            raise ConfigError([f"{path}: image '{name}' not found in {images}"])
        w, h = image_size(images / name)
        a = np.asarray(fixes, dtype=np.float64)
        records[name] = (normalise(a[:, 0], a[:, 1], w, h, coords), a[:, 2].astype(np.int64))
    bad = sorted({s for s in given_split.values() if s not in ("train", "val", "test")})
    if bad:
        raise ConfigError([f"{path}: unknown split values {bad} (use train, val, test)"])
    return records, given_split


def run_csv(src: Path, out: Path, *, shard_size_mb: float = 256, max_side: int | None = None, workers: int = 4,
            seed: int = 0, images: str | None = None, coords: str = "pixels", val_fraction: str | float = 0.15,
            test_fraction: str | float = 0.15, log: Any = print, **_: Any) -> dict[str, Manifest]:
    if coords not in ("pixels", "pixels1", "normalized"):
        raise ConfigError([f"--coords {coords!r}: use pixels, pixels1 or normalized"])
    root = Path(images) if images else src.parent
    records, given = read_csv(src, root, coords)  # type: ignore[arg-type]
    splits = given if len(given) == len(records) else assign_splits(list(records), float(val_fraction),
                                                                     float(test_fraction), seed)
    return write_splits(root, out, records, splits, source_format="csv", shard_size_mb=shard_size_mb,
                        max_side=max_side, workers=workers, log=log)


OSIE_IMPORTER = Importer("osie", detect_osie, run_osie, "OSIE eye fixations: stimuli/*.jpg + fixations.mat")
CSV_IMPORTER = Importer("fixations-csv", detect_csv, run_csv,
                           "eye fixations as a CSV of image,x,y[,subject][,split] (+ --images DIR, --coords)")
