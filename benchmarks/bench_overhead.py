"""Training-loop overhead: vislab's LightningModule + Trainer vs a plain PyTorch loop, same work.

Same model (ResNet-18, 10 classes, 64x64 inputs), same uint8 batches held in memory, same normalisation on
the "device", same optimizer (SGD + Nesterov, decay groups) and per-step LR schedule, same thread count.
vislab runs with everything a real run has (NaN guard, stream position, LR monitor, checkpointing,
CSV logging of the per-step loss); only the per-step wall time inside the epoch is compared (median).

    python benchmarks/bench_overhead.py [--steps 40] [--threads 2] [--batch-size 32] [--size 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vislab.families.classify.module import ClassifierModule
from vislab.models.optim import build_optimizer, build_scheduler, decay_groups
from vislab.train.config import load_config
from vislab.train.trainer import build_trainer

REPO = Path(__file__).resolve().parents[1]


def batches(n: int, bs: int, size: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randint(0, 256, (bs, 3, size, size), dtype=torch.uint8, generator=g),
             "label": torch.randint(0, 10, (bs,), generator=g)} for _ in range(n)]


def config(tmp: str, steps: int, bs: int):
    return load_config(REPO / "configs" / "classify" / "digits.yaml", [
        f"data.root={tmp}", "model.name=resnet18", "data.grayscale=false", "data.mean=[0.485,0.456,0.406]",
        "data.std=[0.229,0.224,0.225]", f"data.batch_size={bs}", "trainer.devices=1", f"trainer.max_steps={steps}",
        "optim.name=sgd", "optim.lr=0.01", "trainer.progress_bar=none", "logger.wandb=false",
        "trainer.log_every_n_steps=10",
    ], check=False)


def plain_loop(cfg, data: list[dict]) -> list[float]:
    torch.manual_seed(0)
    module = ClassifierModule(cfg)  # same nn.Module and PixelNormalise; no Trainer
    model, normalise = module.model.train(), module.normalise
    opt = build_optimizer(decay_groups(model, cfg.optim.weight_decay, True), cfg.optim)
    sched = build_scheduler(opt, cfg.optim, len(data), len(data))
    times, t = [], time.perf_counter()
    for b in data:
        x = normalise(b["image"])
        loss = F.cross_entropy(model(x), b["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss.item()  # Lightning reads the loss every step for logging and the NaN guard: so do we
        now = time.perf_counter()
        times.append(now - t)
        t = now
    return times



class InMemory:
    """An iterable of ready batches (a plain list would be read by Lightning as several dataloaders)."""

    def __init__(self, data: list[dict]):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return iter(self.data)


def lightning_loop(cfg, data: list[dict], run_dir: Path) -> list[float]:
    from pytorch_lightning.callbacks import Callback

    stamps: list[float] = []

    class Stamp(Callback):
        def on_train_batch_start(self, *a, **k) -> None:
            stamps.append(time.perf_counter())

    torch.manual_seed(0)
    trainer = build_trainer(cfg, run_dir, extra_callbacks=[Stamp()])
    trainer.fit(ClassifierModule(cfg), train_dataloaders=InMemory(data))
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = batches(a.steps, a.batch_size, a.size)
    plain: list[float] = []
    light: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(tmp, a.steps, a.batch_size)
        for r in range(a.repeats):  # interleaved so that machine load drifts hit both alike
            plain += plain_loop(cfg, data)[5:]
            light += lightning_loop(cfg, data, Path(tmp) / f"run{r}")[5:]
    mp, ml = statistics.median(plain), statistics.median(light)
    print(f"ResNet-18 {a.size}px batch {a.batch_size}, {a.threads} threads, {a.steps} steps x {a.repeats} (median step)")
    print(f"  plain PyTorch loop  {1000 * mp:8.2f} ms/step  {1 / mp:6.2f} steps/s")
    print(f"  vislab (Lightning)  {1000 * ml:8.2f} ms/step  {1 / ml:6.2f} steps/s")
    print(f"vislab / plain step time = {ml / mp:.3f}x   overhead {100 * (ml / mp - 1):+.1f}% "
          f"({1000 * (ml - mp):+.2f} ms/step; target <= 5%)")


if __name__ == "__main__":
    main()
