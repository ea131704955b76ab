"""V1 training throughput and memory: vislab's training path vs the same model in a plain PyTorch loop.

Measured in the same run, each case in its own subprocess (clean peak RSS):

  plain       the Encoder (SENSORIUM-size core: 4 layers x 64 channels, depth-separable, 9x9 input kernel;
              full-Gaussian readout) on in-memory tensors: forward, Poisson loss, penalties, Adam step.
  vislab      the same Encoder inside V1Module, trained by Lightning from WebDataset shards of simulated
              trials (reader -> decode -> collate by session -> loss scaling -> constraints): `vislab fit`'s path.
  readouts    peak memory of one training step of a factorized vs a Gaussian readout at 1k, 5k, 20k neurons
              on the core's (64, 28, 56) feature map (batch 64), above a core-only baseline.
  one thread  samples/s of `plain` with torch.set_num_threads(1) -> time per epoch of a 5,335-neuron,
              4,472-trial recording, vs neuralpredictors' reported ~6 min per epoch on one thread.

Printed as ratios against the named peer; absolute numbers depend on the machine and its load.

    python benchmarks/bench_v1.py [--neurons 5000] [--steps 30] [--batch 64] [--skip-vislab]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

H, W = 36, 64
SOTA_CORE = {"kind": "stacked", "channels": 64, "layers": 4, "input_kernel": 9, "hidden_kernel": 7,
             "depth_separable": True, "pad_input": False, "gamma_input": 6.3831, "bn_momentum": 0.9}
NEUROPREDICTORS_EPOCH_S = 360.0  # ~6 min per epoch, one thread, 5,335 neurons (issue 4's reference)
SENSORIUM_TRIALS, SENSORIUM_NEURONS = 4472, 5335


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def encoder(neurons: int, readout: str = "gaussian") -> Any:
    from vislab.models.v1.encoder import build_encoder

    ro: dict[str, Any] = {"kind": readout, "gamma": 0.0076}
    if readout == "gaussian":
        ro.update(init_sigma=0.1, init_mu_range=0.3)
    return build_encoder(SOTA_CORE, ro, {"s": {"num_neurons": neurons, "image_shape": [1, H, W]}}, "elu1")


def child_plain(neurons: int, steps: int, batch: int, threads: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = encoder(neurons)
    opt = torch.optim.Adam(model.parameters(), lr=0.009)
    x = torch.randn(8, batch, 1, H, W)
    y = torch.poisson(torch.full((8, batch, neurons), 1.0))
    scale = math.sqrt(SENSORIUM_TRIALS / batch)

    def step(i: int) -> None:
        rates = model(x[i % 8], "s")
        loss = scale * F.poisson_nll_loss(rates, y[i % 8], log_input=False, reduction="sum") + model.regularizer()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.constrain()

    for i in range(3):
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    dt = time.perf_counter() - t0
    return {"samples_per_s": steps * batch / dt, "peak_rss_mb": peak_rss_mb()}


def child_vislab(neurons: int, steps: int, batch: int, data: str) -> dict[str, Any]:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback

    from vislab.models.v1.module import datamodule, module
    from vislab.train.config import load_config

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "v1" / "gaussian.yaml",
                      [f"data.root={data}", f"data.batch_size={batch}", "data.num_workers=1", "trainer.devices=1",
                       "trainer.accelerator=cpu", "model.position_predictor=none"])

    class Timer(Callback):
        def __init__(self) -> None:
            self.t: list[float] = []

        def on_train_batch_end(self, *args: Any) -> None:
            self.t.append(time.perf_counter())

    dm = datamodule(cfg)
    timer = Timer()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps + 3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[timer], use_distributed_sampler=False)
    trainer.fit(module(cfg, dm.meta), datamodule=dm)
    dt = timer.t[-1] - timer.t[2]
    return {"samples_per_s": (len(timer.t) - 3) * batch / dt, "peak_rss_mb": peak_rss_mb()}


def child_readout(neurons: int, readout: str, batch: int) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    model = encoder(neurons, readout) if readout != "none" else encoder(1, "gaussian")
    params = sum(p.numel() for p in model.readouts.parameters()) if readout != "none" else 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, H, W)
    for _ in range(2):
        loss = model(x, "s").sum() + model.regularizer()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"peak_rss_mb": peak_rss_mb(), "readout_params": params, "feature_shape": list(model.feature_shape("s"))}


def run_child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_shards(root: Path, neurons: int, trials: int) -> Path:
    """Simulated trials of `neurons` neurons written through the real importer (static layout)."""
    from vislab.data.importers.static_v1 import run as import_static
    from vislab.data.simulate_v1 import SimulationConfig, simulate

    cfg = SimulationConfig(sessions=1, neurons=neurons, train=trials, validation=64, test_images=8, repeats=2)
    simulate(root / "src", cfg)
    import_static(root / "src", root / "shards", workers=2, log=lambda s: None)
    return root / "shards"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--neurons", type=int, default=5000)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--skip-vislab", action="store_true", help="skip the Lightning + shards case")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        kind, *rest = a.child
        fn = {"plain": lambda: child_plain(int(rest[0]), int(rest[1]), int(rest[2]), int(rest[3])),
              "vislab": lambda: child_vislab(int(rest[0]), int(rest[1]), int(rest[2]), rest[3]),
              "readout": lambda: child_readout(int(rest[0]), rest[1], int(rest[2]))}[kind]
        print(json.dumps(fn()))
        return

    n, steps, batch = a.neurons, a.steps, a.batch
    print(f"# V1 benchmark: {n} neurons, {H}x{W} images, batch {batch}, {steps} timed steps")
    plain = run_child(["plain", str(n), str(steps), str(batch), "0"])
    print(f"plain PyTorch loop   {plain['samples_per_s']:8.1f} samples/s   peak RSS {plain['peak_rss_mb']:7.0f} MB")
    if not a.skip_vislab:
        with tempfile.TemporaryDirectory(prefix="bench-v1-") as tmp:
            data = make_shards(Path(tmp), n, trials=max(512, 2 * steps * batch))
            vis = run_child(["vislab", str(n), str(steps), str(batch), str(data)])
        print(f"vislab (Lightning+shards) {vis['samples_per_s']:8.1f} samples/s   peak RSS {vis['peak_rss_mb']:7.0f} MB")
        print(f"ratio vislab / plain: throughput {vis['samples_per_s'] / plain['samples_per_s']:.2f}, "
              f"peak memory {vis['peak_rss_mb'] / plain['peak_rss_mb']:.2f}")

    base = run_child(["readout", "1", "none", str(batch)])
    print(f"\n# readout memory (one training step, batch {batch}, feature map {base['feature_shape']}), "
          f"above the core-only baseline of {base['peak_rss_mb']:.0f} MB")
    print(f"{'neurons':>8} {'factorized MB':>14} {'gaussian MB':>12} {'ratio':>7} {'fact. params':>13} {'gauss params':>13}")
    for neurons in (1000, 5000, 20000):
        fac = run_child(["readout", str(neurons), "factorized", str(batch)])
        gau = run_child(["readout", str(neurons), "gaussian", str(batch)])
        df, dg = fac["peak_rss_mb"] - base["peak_rss_mb"], gau["peak_rss_mb"] - base["peak_rss_mb"]
        print(f"{neurons:>8} {df:>14.0f} {dg:>12.0f} {df / max(dg, 1.0):>7.1f} {fac['readout_params']:>13,} "
              f"{gau['readout_params']:>13,}")
    print("factorized readout: parameters N x (H'W' + C) -- with Adam 4 copies; use the Gaussian readout (N x (C + 7)) "
          "for thousands of neurons or large feature maps")

    one = run_child(["plain", str(SENSORIUM_NEURONS), "10", str(batch), "1"])
    epoch = SENSORIUM_TRIALS / one["samples_per_s"]
    print(f"\n# one thread, {SENSORIUM_NEURONS} neurons: {one['samples_per_s']:.1f} samples/s -> {epoch:.0f} s per "
          f"epoch of {SENSORIUM_TRIALS} trials; neuralpredictors ~{NEUROPREDICTORS_EPOCH_S:.0f} s: "
          f"ratio {NEUROPREDICTORS_EPOCH_S / epoch:.2f}x")


if __name__ == "__main__":
    main()
