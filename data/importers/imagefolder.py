"""ImageFolder trees (`class/xxx.jpg`) -> image shards, JPEG bytes kept as they are.

A source with `train/`, `val/` (or `validation/`), `test/` subfolders gives one shard set per split;
a plain class tree gives one set. Class indices are the sorted class folder names of the training split
(ImageFolder's convention) and are stored in the manifest (`meta.classes`).

Every image is checked while it is written: a file that is not an image, a JPEG without its end marker
(truncated) or an image beyond PIL's decompression-bomb limit is an error naming the file (no shard is left
half written); 16-bit PNGs are converted to 8 bits (what every decoder of the training pipeline reads).
"""

from __future__ import annotations

import io
import random
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from vislab.core.errors import ConfigError
from vislab.data.importers import Importer
from vislab.data.manifest import Manifest, ShardError
from vislab.data.shards import plan_shards, write_shard_set

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG"
JPEG_END = b"\xff\xd9"


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


def check_image_bytes(data: bytes, path: Path) -> None:
    """Cheap checks of bytes kept as they are: not empty, a JPEG ends with its end-of-image marker."""
    if not data:
        raise ShardError(f"{path}: empty file (0 bytes), not an image")
    # a JPEG may carry a few bytes of padding after its end marker, never a missing one
    if data.startswith(JPEG_MAGIC) and JPEG_END not in data[-64:]:
        raise ShardError(f"{path}: truncated JPEG (no end-of-image marker); re-download or remove it")


def _png_bit_depth(data: bytes) -> int:
    return data[24] if data.startswith(PNG_MAGIC) and len(data) > 24 else 8  # IHDR's bit depth field


def encode_image(item: tuple[str, int], root: str, max_side: int | None, quality: int = 90) -> dict[str, Any]:
    rel, label = item
    path = Path(root) / rel
    data = path.read_bytes()
    check_image_bytes(data, path)
    if data.startswith(JPEG_MAGIC) and not max_side:
        return {"__key__": _key(rel), "jpg": data, "cls": label}
    if data.startswith(PNG_MAGIC) and not max_side and _png_bit_depth(data) <= 8:
        return {"__key__": _key(rel), "png": data, "cls": label}
    try:
        return _reencode(data, rel, label, max_side, quality)
    except Image.DecompressionBombError as e:
        raise ShardError(f"{path}: {e} (PIL's decompression-bomb guard; shrink the image or drop it)") from e
    except UnidentifiedImageError as e:
        raise ShardError(f"{path}: not an image file (no known image format in its first bytes)") from e
    except (OSError, SyntaxError, ValueError) as e:  # PIL's ways of saying "corrupt image"
        raise ShardError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e


def _to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit grayscale (PIL modes I;16*, I) -> 8-bit L, keeping the top 8 bits of 16-bit values."""
    if im.mode.startswith("I;16") or im.mode == "I":
        pixels = np.asarray(im).astype(np.int64)
        shift = 8 if pixels.max() > 255 else 0  # mode I also holds 8-bit values (some TIFFs)
        return Image.fromarray((pixels >> shift).clip(0, 255).astype(np.uint8), mode="L")
    return im


def _reencode(data: bytes, rel: str, label: int, max_side: int | None, quality: int) -> dict[str, Any]:
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()  # decode now: truncated or corrupt pixel data fails here, inside the try of encode_image
        im: Image.Image = _to_8bit(opened)
        needs_resize = max_side is not None and max(im.size) > max_side
        if data.startswith(JPEG_MAGIC) and not needs_resize:
            return {"__key__": _key(rel), "jpg": data, "cls": label}
        if needs_resize:
            assert max_side is not None
            scale = max_side / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        if im.mode in ("RGB", "L") and (max_side or not data.startswith(PNG_MAGIC)):  # a 16-bit PNG stays lossless
            im.save(buf, format="JPEG", quality=quality)
            return {"__key__": _key(rel), "jpg": buf.getvalue(), "cls": label}
        im.save(buf, format="PNG")
        return {"__key__": _key(rel), "png": buf.getvalue(), "cls": label}


def _source_files(root: str, item: tuple[str, int]) -> list[str]:
    return [str(Path(root) / item[0])]


def _size_of(sizes: dict[str, int], item: tuple[str, int]) -> int:
    return sizes[item[0]]


def run(src: Path, out: Path, *, shard_size_mb: float = 256, max_side: int | None = None, workers: int = 4,
        seed: int = 0, log: Any = print, **_: Any) -> dict[str, Manifest]:
    splits = splits_of(src)
    train_dir = splits.get("train", next(iter(splits.values())))
    classes = class_dirs(train_dir)
    if not classes:
        raise ConfigError([f"{train_dir}: no class folders (expected {train_dir}/<class>/<image>)"])
    manifests = {}
    for split, d in splits.items():
        extra = sorted(set(class_dirs(d)) - set(classes))
        if extra:
            raise ConfigError([f"{d}: class folders {extra[:5]} do not exist in {train_dir}"])
        items = scan(d, classes)
        if not items:
            raise ConfigError([f"{d}: no images with extensions {sorted(EXTENSIONS)}"])
        random.Random(seed).shuffle(items)  # mix classes across shards: any shard is a fair sample
        sizes = {rel: (d / rel).stat().st_size for rel, _ in items}
        plans = plan_shards(items, max_bytes=int(shard_size_mb * 2**20), size_of=partial(_size_of, sizes))
        encode = partial(encode_image, root=str(d), max_side=max_side)
        meta = {"family": "image", "classes": classes, "num_classes": len(classes)}
        manifests[split or "all"] = write_shard_set(
            out / split if split else out, plans, encode, workers=workers, source=str(d.resolve()),
            meta=meta, split=split or None, log=log, sources=partial(_source_files, str(d)),
        )
    return manifests


IMPORTER = Importer("imagefolder", detect, run, "class/xxx.jpg trees, optionally inside train/ val/ test/")
