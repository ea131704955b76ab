"""ImageFolder trees (`class/xxx.jpg`) -> image shards, JPEG bytes kept as they are.

A source with `train/`, `val/` (or `validation/`), `test/` subfolders gives one shard set per split;
a plain class tree gives one set. Class indices are the sorted class folder names of the training split
(ImageFolder's convention) and are stored in the manifest (`meta.classes`).
"""

from __future__ import annotations

import io
import random
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from vislab.data.importers import Importer
from vislab.data.manifest import Manifest
from vislab.data.shards import plan_shards, write_shard_set

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG"


def class_dirs(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def scan(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path relative to root, class index) for every image file, in a stable order."""
    items = []
    for label, name in enumerate(classes):
        d = root / name
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix.lower() in EXTENSIONS:
                items.append((str(p.relative_to(root)), label))
    return items


def splits_of(src: Path) -> dict[str, Path]:
    """Split subfolders of a source, or {'': src} when the source is one class tree."""
    found = {SPLIT_NAMES[d.name.lower()]: d for d in sorted(src.iterdir()) if d.is_dir() and d.name.lower() in SPLIT_NAMES}
    return found or {"": src}


def detect(src: Path) -> bool:
    if not src.is_dir():
        return False
    for d in splits_of(src).values():
        classes = class_dirs(d)
        if classes and any(p.suffix.lower() in EXTENSIONS for p in (d / classes[0]).rglob("*")):
            return True
    return False


def _key(rel: str) -> str:
    # webdataset splits a member name at the first '.' of its basename: keys must not contain dots
    stem = rel.rsplit(".", 1)[0]
    return stem.replace(".", "_").replace(" ", "_")


def encode_image(item: tuple[str, int], root: str, max_side: int | None, quality: int = 90) -> dict[str, Any]:
    rel, label = item
    data = (Path(root) / rel).read_bytes()
    if data.startswith(JPEG_MAGIC) and not max_side:
        return {"__key__": _key(rel), "jpg": data, "cls": label}
    if data.startswith(PNG_MAGIC) and not max_side:
        return {"__key__": _key(rel), "png": data, "cls": label}

    with Image.open(io.BytesIO(data)) as opened:
        im: Image.Image = opened
        needs_resize = max_side is not None and max(im.size) > max_side
        if data.startswith(JPEG_MAGIC) and not needs_resize:
            return {"__key__": _key(rel), "jpg": data, "cls": label}
        if needs_resize:
            assert max_side is not None
            scale = max_side / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        if im.mode in ("RGB", "L"):
            im.save(buf, format="JPEG", quality=quality)
            return {"__key__": _key(rel), "jpg": buf.getvalue(), "cls": label}
        im.save(buf, format="PNG")
        return {"__key__": _key(rel), "png": buf.getvalue(), "cls": label}


def _size_of(sizes: dict[str, int], item: tuple[str, int]) -> int:
    return sizes[item[0]]


def run(src: Path, out: Path, *, shard_size_mb: float = 256, max_side: int | None = None, workers: int = 4,
        seed: int = 0, log: Any = print, **_: Any) -> dict[str, Manifest]:
    splits = splits_of(src)
    train_dir = splits.get("train", next(iter(splits.values())))
    classes = class_dirs(train_dir)
    if not classes:
        raise ValueError(f"{train_dir}: no class folders (expected {train_dir}/<class>/<image>)")
    manifests = {}
    for split, d in splits.items():
        extra = sorted(set(class_dirs(d)) - set(classes))
        if extra:
            raise ValueError(f"{d}: class folders {extra[:5]} do not exist in {train_dir}")
        items = scan(d, classes)
        if not items:
            raise ValueError(f"{d}: no images with extensions {sorted(EXTENSIONS)}")
        random.Random(seed).shuffle(items)  # mix classes across shards: any shard is a fair sample
        sizes = {rel: (d / rel).stat().st_size for rel, _ in items}
        plans = plan_shards(items, max_bytes=int(shard_size_mb * 2**20), size_of=partial(_size_of, sizes))
        encode = partial(encode_image, root=str(d), max_side=max_side)
        meta = {"family": "image", "classes": classes, "num_classes": len(classes)}
        manifests[split or "all"] = write_shard_set(
            out / split if split else out, plans, encode, workers=workers, source=str(d.resolve()),
            meta=meta, split=split or None, log=log,
        )
    return manifests


IMPORTER = Importer("imagefolder", detect, run, "class/xxx.jpg trees, optionally inside train/ val/ test/")
