"""Linear-probe training time: cached features (the fast path) vs end to end through the frozen backbone.

Both train the same linear head, with the same optimizer, on the same samples in the same order, through
the same data module and LightningModule code as `vislab fit configs/transfer/linear_probe_lite0.yaml`:

  cached      pre-logit features read from feature shards (extracted once; the extraction is timed apart)
  end-to-end  JPEGs decoded and run through the frozen backbone at every step

Prints seconds per training epoch of each and their ratio, the one-off extraction time, and after how
many epochs the cache has paid for itself. Timings on a shared machine are noisy: read the ratio.

    python benchmarks/bench_transfer.py [--src ../shared/data/imagenette] [--per-class 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "transfer" / "linear_probe_lite0.yaml"


def subset_tree(src: Path, out: Path, per_class: int) -> Path:
    """out/{train,val}/<class>/: the first `per_class` (val: a quarter) images of each class (symlinks)."""
    for split, n in (("train", per_class), ("val", max(1, per_class // 4))):
        for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            d = out / split / cls.name
            d.mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]:
                os.symlink(f.resolve(), d / f.name)
    return out


def train_epoch(cfg, meta=None) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    """(seconds to build the data module, seconds for one training epoch, images seen)."""
    from vislab.families.transfer import module as transfer

    t0 = time.perf_counter()
    dm = transfer.datamodule(cfg)  # the cached path extracts its features here (once)
    built = time.perf_counter() - t0
    module = transfer.module(cfg, dm.meta)
    opt = torch.optim.AdamW(module.model.classifier.parameters(), lr=cfg.optim.lr)
    seen, t0 = 0, time.perf_counter()
    for batch in dm.train_dataloader():
        batch = module.on_after_batch_transfer(batch, 0)
        loss = F.cross_entropy(module._logits(batch), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(batch["label"])
    return built, time.perf_counter() - t0, seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "imagenette")
    p.add_argument("--per-class", type=int, default=32, help="training images per class (10 classes)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    from vislab.data.importers.imagefolder import run as shard_imagefolder
    from vislab.train.config import load_config

    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        root = Path(tmp) / "shards"
        shard_imagefolder(subset_tree(a.src, Path(tmp) / "tree", a.per_class), root, shard_size_mb=1, workers=1,
                          log=lambda s: None)
        common = [f"data.root={root}", f"model.feature_cache={tmp}/cache", f"data.batch_size={a.batch_size}",
                  f"data.num_workers={a.workers}", "trainer.devices=1", "logger.wandb=false"]
        extract, cached, n = train_epoch(load_config(CONFIG, common))
        _, again, _ = train_epoch(load_config(CONFIG, common))  # second epoch on the cache: no extraction
        _, end_to_end, n2 = train_epoch(load_config(CONFIG, [*common, "model.cache_features=false"]))
    cached = min(cached, again)
    print(f"efficientnet_lite0 linear probe, {n} images per epoch, batch {a.batch_size}, "
          f"{torch.get_num_threads()} threads, {a.workers} loader workers")
    print(f"  cached features : {cached:8.2f} s/epoch")
    print(f"  end to end      : {end_to_end:8.2f} s/epoch   ({n2} images)")
    print(f"  ratio end-to-end / cached: {end_to_end / cached:.1f}x")
    print(f"  one-off feature extraction (train + val): {extract:.1f} s "
          f"(= {extract / max(1e-9, end_to_end):.2f} end-to-end epochs; pays off after "
          f"{extract / max(1e-9, end_to_end - cached):.1f} epochs)")


if __name__ == "__main__":
    main()
