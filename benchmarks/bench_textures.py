"""L-BFGS iterations/s of texture synthesis: Lightning module vs the same optimisation as a plain loop, and
a batch of B images vs batch size 1 (random multi-scale net, real photo from scikit-learn).

    python benchmarks/bench_textures.py [--size 128] [--batch 4] [--steps 20] [--channels 32]

Prints iterations/s and image-iterations/s for each, and the ratios (Lightning / plain; batch / batch 1).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images
from torch.utils.data import DataLoader

from vislab.families.textures.features import RandomMultiScale
from vislab.families.textures.losses import Objective, gram
from vislab.families.textures.module import PixelSynthesis, spectrum_noise


def setup(size: int, batch: int, channels: int) -> tuple[RandomMultiScale, Objective, torch.Tensor]:
    photo = torch.from_numpy(np.asarray(load_sample_images().images[0], dtype=np.float32) / 255).permute(2, 0, 1)[None]
    src = F.interpolate(photo, size=(size, size), mode="bilinear", antialias=True)
    net = RandomMultiScale([3, 5, 7, 11, 15, 23, 37, 55], channels, 0, ["all"]).eval().requires_grad_(False)
    with torch.no_grad():
        target = gram(net(src)["all"]).expand(batch, -1, -1)
    init = torch.cat([spectrum_noise(src, seed) for seed in range(batch)])
    return net, Objective(["all"], [], [{"all": target}], [None]), init


def lightning(net: RandomMultiScale, obj: Objective, init: torch.Tensor, steps: int) -> float:
    module = PixelSynthesis(net, obj, init, optimizer="lbfgs", log_every=10)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    t = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(range(steps), batch_size=None))  # type: ignore[arg-type]
    return steps / (time.perf_counter() - t)


def plain(net: RandomMultiScale, obj: Objective, init: torch.Tensor, steps: int) -> float:
    image = torch.nn.Parameter(init.clone())
    opt = torch.optim.LBFGS([image], lr=1.0, max_iter=1, history_size=100, tolerance_grad=0.0, tolerance_change=0.0)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.stack(list(obj(net(image), image).values())).sum() * image[0].numel()
        loss.backward()
        return loss

    t = time.perf_counter()
    for _ in range(steps):
        opt.step(closure)  # type: ignore[arg-type]
    return steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--channels", type=int, default=32)
    a = p.parse_args()
    torch.manual_seed(0)
    rows = {}
    for name, fn, batch in (("plain loop", plain, a.batch), ("lightning", lightning, a.batch),
                            ("lightning batch 1", lightning, 1)):
        net, obj, init = setup(a.size, batch, a.channels)
        fn(net, obj, init, 2)  # warm-up: FFT plans, kernel spectrum, Lightning's first-fit set-up
        rows[name] = (fn(net, obj, init, a.steps), batch)
        print(f"{name:18s} B={batch}: {rows[name][0]:.3f} it/s, {rows[name][0] * batch:.3f} image-it/s", flush=True)
    print(f"lightning / plain (same batch): {rows['lightning'][0] / rows['plain loop'][0]:.3f}")
    print(f"batch {a.batch} / batch 1 (image-iterations/s): "
          f"{rows['lightning'][0] * a.batch / rows['lightning batch 1'][0]:.3f}")
    print(f"threads {torch.get_num_threads()}, size {a.size}, steps {a.steps}, channels/size {a.channels}")


if __name__ == "__main__":
    main()
