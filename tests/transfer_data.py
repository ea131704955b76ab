"""Tiny data sets for the transfer, saliency and export tests, made inside the tests.

Images: three classes of coloured squares on noise (separable by colour even for a random backbone).
Fixations: noise images with one bright blob each; the fixations fall on the blob (and a few at the
centre), so a model that looks at the image beats the centre bias.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230)]


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread for the tiny models of these tests: they gain nothing from more, and on a busy
    shared CPU OpenMP barriers make every small op wait for a descheduled thread (fits measured 4x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_image_tree(root: Path, per_class: dict[str, int], size: int = 40, seed: int = 0) -> Path:
    """root/<split>/<class>/*.png with `per_class[split]` images per class."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c, colour in enumerate(COLOURS):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                x, y = rng.integers(0, size // 2, 2)
                img[y:y + size // 2, x:x + size // 2] = colour
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def image_shards(base: Path, per_class: dict[str, int] | None = None, size: int = 40) -> Path:
    from vislab.data.importers.imagefolder import run as shard_imagefolder

    write_image_tree(base / "png", per_class or {"train": 16, "val": 8}, size=size)
    shard_imagefolder(base / "png", base / "shards", shard_size_mb=0.02, workers=1, log=lambda s: None)
    return base / "shards"


def write_fixation_csv(root: Path, n_images: int = 24, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """root/images/*.jpg + root/fixations.csv (image,x,y,subject; 0-based pixels)."""
    rng = np.random.default_rng(seed)
    w, h = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_images):
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        cx, cy = int(rng.integers(8, w - 8)), int(rng.integers(8, h - 8))
        img[cy - 5:cy + 5, cx - 5:cx + 5] = 255
        Image.fromarray(img).save(root / "images" / f"img{i:03d}.jpg", quality=95)
        for s in range(4):
            for _ in range(5):
                rows.append((f"images/img{i:03d}.jpg", cx + rng.normal(0, 2), cy + rng.normal(0, 2), f"s{s}"))
            rows.append((f"images/img{i:03d}.jpg", w / 2 + rng.normal(0, 3), h / 2 + rng.normal(0, 3), f"s{s}"))
    with open(root / "fixations.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "x", "y", "subject"])
        writer.writerows(rows)
    return root / "fixations.csv"


def fixation_shards(base: Path, n_images: int = 24) -> Path:
    from vislab.families.saliency.importers.fixations import run_csv

    csv_path = write_fixation_csv(base / "raw", n_images=n_images)
    run_csv(csv_path, base / "shards", shard_size_mb=0.01, workers=1, val_fraction=0.25, test_fraction=0.25,
            log=lambda s: None)
    return base / "shards"


def tiny(root: Path, runs: Path, *extra: str) -> list[str]:
    """The shipped configs on a random ResNet-18 at 32 px (the weights carry no sizes, so they may be set)."""
    return [f"data.root={root}", f"runs_root={runs}", f"model.feature_cache={runs / 'cache'}",
            "model.backbone.name=resnet18", "model.backbone.weights=null", "data.eval_crop=32", "data.eval_resize=36",
            "data.train_crop=32", "data.batch_size=8", "data.num_workers=0", "data.shuffle_buffer=16",
            "trainer.devices=1", "trainer.progress_bar=none", "logger.wandb=false", "trainer.log_every_n_steps=1", *extra]


def tiny_saliency_overrides(root: Path, runs: Path, cache: Path, *extra: str) -> list[str]:
    """The shipped config on a random ResNet-18 at 64 px (the readout and the pipeline are what is tested)."""
    return [f"data.root={root}", f"runs_root={runs}", f"model.feature_cache={cache}", "model.backbone.name=resnet18",
            "model.backbone.weights=null", "model.layers=[layer1,layer2]", "model.readout_channels=[8,4]",
            "data.image_size=[64,64]", "data.density_size=[16,16]", "data.batch_size=4", "data.num_workers=0",
            "data.shuffle_buffer=20", "trainer.devices=1", "trainer.progress_bar=none", "optim.lr=0.01",
            "trainer.log_every_n_steps=1", "model.feature_dropout=0.0", *extra]
