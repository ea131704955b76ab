"""Loader throughput: vislab's shard stream vs torchvision ImageFolder + DataLoader and vs webdataset's own
`WebDataset` pipeline, on the same JPEGs and the same shards, measured in the same run.

All four read the same images with the same transforms (decode, RandomResizedCrop, horizontal flip, to
uint8 tensor, collate), the same batch size and the same number of worker processes:

  imagefolder  torchvision.datasets.ImageFolder (PIL decode) + DataLoader(shuffle=True)
  vislab       WebDataset shards -> TrainStream (resampled, shuffled) -> StreamLoader, torchvision.io decode
  webdataset   the same shards through webdataset's documented pipeline: WebDataset(resampled=True)
               .shuffle(1000).map(decode + transforms).batched -> WebLoader, the same decoder as vislab
  ceiling      decode + transform only: the same DataLoader and workers over JPEG bytes already in RAM
               (no file IO, no tar parsing, no shuffle buffer): what any loader with this decoder can reach

    python benchmarks/bench_loader.py [--src ../shared/data/imagenette/train] [--workers 2] [--crop 224]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from vislab.data.images import ImageDecode, decode_bytes
from vislab.data.importers.imagefolder import run as shard_imagefolder
from vislab.data.manifest import Manifest
from vislab.data.pipeline import StreamLoader, TrainStream, epoch_batches


def rate(batches, n_images: int, warmup: int = 3) -> float:
    """Steady-state images/s: worker start-up and buffer filling (the first batches) are not timed."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    t0, seen = time.perf_counter(), 0
    for b in it:
        seen += len(b["image"]) if isinstance(b, dict) else len(b[0])
        if seen >= n_images:
            break
    return seen / (time.perf_counter() - t0)


def imagefolder(src: Path, crop: int, bs: int, workers: int, n: int) -> float:
    tf = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip()])
    ds = datasets.ImageFolder(str(src), transform=tf)
    dl = DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, drop_last=True, prefetch_factor=4)
    return rate(dl, n)


def vislab(root: Path, crop: int, bs: int, workers: int, n: int) -> float:
    m = Manifest.load(root)
    stream = TrainStream(urls=m.urls(root), counts=[s.count for s in m.shards], decode=ImageDecode(train=True, crop=crop),
                         batch_size=bs, batches_per_rank=epoch_batches(m.num_samples, 1, bs), seed=0, shuffle_buffer=1000)
    return rate(StreamLoader(stream, workers), n)


def webdataset(root: Path, crop: int, bs: int, workers: int, n: int) -> float:
    tf = v2.Compose([v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip()])
    urls = Manifest.load(root).urls(root)

    def sample(s: dict) -> dict:
        return {"image": tf(decode_bytes(s["jpg"] if "jpg" in s else s["jpeg"])), "label": int(s["cls"])}

    ds = (wds.WebDataset(urls, resampled=True, shardshuffle=False, nodesplitter=wds.split_by_node)  # resampled: shards drawn at random
          .shuffle(1000).map(sample).batched(bs, partial=False))
    return rate(wds.WebLoader(ds, batch_size=None, num_workers=workers, prefetch_factor=4), n)


class _InMemory(torch.utils.data.Dataset):
    """JPEG bytes already in RAM: decode + transform only, no file IO, no tar parsing, no shuffle buffer."""

    def __init__(self, data: list[bytes], crop: int):
        self.data = data
        self.tf = v2.Compose([v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.tf(decode_bytes(self.data[i]))}


def ceiling(src: Path, crop: int, bs: int, workers: int, n: int) -> float:
    data = [p.read_bytes() for p in sorted(src.rglob("*.JPEG"))]
    dl = DataLoader(_InMemory(data, crop), batch_size=bs, shuffle=True, num_workers=workers, drop_last=True,
                    prefetch_factor=4)
    return rate(dl, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/imagenette/train")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--images", type=int, default=2000, help="images per measurement")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)  # decoding is per worker process; keep the main process from competing
    with tempfile.TemporaryDirectory() as tmp:
        shard_imagefolder(a.src, Path(tmp), shard_size_mb=32, workers=a.workers, log=lambda s: None)
        results: dict[str, list[float]] = {"imagefolder": [], "vislab": [], "webdataset": [], "ceiling": []}
        for _ in range(a.repeats):  # interleaved, so drifting machine load hits all four alike
            results["imagefolder"].append(imagefolder(a.src, a.crop, a.batch_size, a.workers, a.images))
            results["vislab"].append(vislab(Path(tmp), a.crop, a.batch_size, a.workers, a.images))
            results["webdataset"].append(webdataset(Path(tmp), a.crop, a.batch_size, a.workers, a.images))
            results["ceiling"].append(ceiling(a.src, a.crop, a.batch_size, a.workers, a.images))
    best = {k: max(v) for k, v in results.items()}
    print(f"images: {a.src} ({a.images} per run, best of {a.repeats}); workers={a.workers} batch={a.batch_size} crop={a.crop}")
    for k, v in best.items():
        print(f"  {k:12s} {v:8.1f} images/s")
    print(f"vislab / imagefolder = {best['vislab'] / best['imagefolder']:.2f}x   (target >= 1.0)")
    print(f"vislab / webdataset  = {best['vislab'] / best['webdataset']:.2f}x   (webdataset's own pipeline, same shards)")
    print(f"vislab / ceiling     = {best['vislab'] / best['ceiling']:.2f}x   (target >= 0.9)")


if __name__ == "__main__":
    main()
