"""The images under test: one shard set, split across ranks by global index, centre-cropped, in memory.

Every rank walks the shard set's samples in manifest order and keeps global indices i < max_images with
i % world_size == rank, so each image is evaluated exactly once whatever the shard count, and a subset
(`--max-images`) is the same images on 1 or 64 ranks. Only a rank's own images are decoded; reading the
other samples' bytes costs little next to ~60 forward passes per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.transforms import v2

from vislab.core.errors import ConfigError
from vislab.data.images import decode_bytes, image_bytes
from vislab.data.manifest import MANIFEST, Manifest, ShardError
from vislab.data.pipeline import shard_samples
from vislab.families.robustness.classifier import Classifier
from vislab.families.robustness.humans import load_categories

CROP = 224
"""The papers' stimuli: centre crop 224 x 224 (shorter side first resized to 224 only if smaller)."""


@dataclass
class Images:
    pixels: torch.Tensor
    """(N, 3, 224, 224) uint8."""
    labels: torch.Tensor
    """(N,) class index in the shard set's classes."""
    keys: list[str]
    index: list[int]
    """Global position of each image in the shard set (subset selection, attack subset)."""


@dataclass
class Targets:
    """What counts as correct: the model's output index and the 16-class category of each data class."""

    top1: list[int]
    """data class -> model output index."""
    category: list[int]
    """data class -> one of the 16 categories, -1 when the class belongs to none."""
    output_sets: list[list[int]]
    """Per category, the model outputs aggregated into it."""


def shard_set(root: Path) -> tuple[Path, list[str]]:
    """(shard set directory, problems): ROOT itself, else ROOT/val, else ROOT/test."""
    for d in (root, root / "val", root / "test"):
        if (d / MANIFEST).is_file():
            return d, []
    if not root.exists():
        return root, [f"--data {root}: not found"]
    return root, [f"--data {root}: no {MANIFEST} in it or in its val/ or test/ (write shards with `vislab shard`)"]


def data_classes(directory: Path) -> tuple[Manifest, list[str]]:
    try:
        manifest = Manifest.load(directory)
    except ShardError as e:
        raise ConfigError([f"--data: {e}"]) from e
    classes = manifest.meta.get("classes")
    if not classes:
        raise ConfigError([f"--data {directory}: the manifest names no classes (meta.classes): not labelled images"])
    return manifest, list(classes)


def targets(classes: list[str], clf: Classifier, data: str) -> Targets:
    """Map data classes to model outputs: the same class names, or wnids into an ImageNet-1k head."""
    cats = load_categories()
    names = clf.class_names or []
    if list(classes) == list(names[: len(classes)]) and len(classes) == clf.num_classes:
        top1 = list(range(len(classes)))
        model_wnids: list[str] | None = list(names)
    elif clf.num_classes == 1000 and all(c in cats.imagenet_wnids for c in classes):
        top1 = [cats.imagenet_wnids.index(c) for c in classes]
        model_wnids = None  # the ImageNet head: the reference indices of the 16-class mapping
    elif all(c in names for c in classes):
        top1 = [names.index(c) for c in classes]
        model_wnids = list(names)
    else:
        missing = [c for c in classes if c not in names][:3]
        raise ConfigError([f"--data {data}: its classes do not match the model's ({clf.source}: {clf.num_classes} "
                           f"classes); e.g. {', '.join(missing)} is not a model class nor an ImageNet wnid"])
    return Targets(top1, [cats.category_of(c) for c in classes], cats.output_sets(model_wnids, clf.num_classes))


def centre_crop(image: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, size, size): the paper's centre crop (resize first only if a side is short)."""
    if min(image.shape[-2:]) < size:
        image = v2.functional.resize(image, size, antialias=True)
    return v2.functional.center_crop(image, [size, size])


def read_images(directory: Path, manifest: Manifest, rank: int, world_size: int, max_images: int | None) -> Images:
    pixels, labels, keys, index = [], [], [], []
    i = 0
    limit = manifest.num_samples if max_images is None else min(max_images, manifest.num_samples)
    for url, info in zip(manifest.urls(directory), manifest.shards, strict=True):
        if i >= limit:
            break
        for sample in shard_samples(url, info.count):
            if i >= limit:
                break
            if i % world_size == rank:
                where = f"{sample['__key__']} in {url}"
                pixels.append(centre_crop(decode_bytes(image_bytes(sample), where=where)))
                labels.append(int(sample["cls"]))
                keys.append(sample["__key__"])
                index.append(i)
            i += 1
    stacked = torch.stack(pixels) if pixels else torch.zeros((0, 3, CROP, CROP), dtype=torch.uint8)
    return Images(stacked, torch.tensor(labels, dtype=torch.long), keys, index)
