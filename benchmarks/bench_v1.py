"""V1 training throughput and memory: vislab's training path vs the same model in a plain PyTorch loop.

Measured in the same run, each case in its own subprocess (clean peak RSS):

  plain       the Encoder (SENSORIUM-size core: 4 layers x 64 channels, depth-separable, 9x9 input kernel;
              full-Gaussian readout) on in-memory tensors: forward, Poisson loss, penalties, Adam step.
  vislab      the same Encoder inside V1Module, trained by Lightning from WebDataset shards of simulated
              trials (reader -> decode -> collate by session -> loss scaling -> constraints): `vislab fit`'s path.
  readouts    peak memory of one training step of a factorized vs a Gaussian readout at 1k, 5k, 20k neurons
              on the core's (64, 28, 56) feature map (batch 64), above a core-only baseline.
  neuralpredictors  the peer, measured here: the SENSORIUM 2022 baseline built with neuralpredictors' own
              `Stacked2dCore` + `FullGaussian2d` (sensorium's `stacked_core_full_gauss_readout` settings), the
              same in-memory loop, loss, penalties and optimizer as `plain`.
  one thread  samples/s of `plain` and `neuralpredictors` with torch.set_num_threads(1), 5,335 neurons ->
              time per epoch of a SENSORIUM-size recording (4,472 trials) for both.

Every case runs with the same number of torch threads (`--threads`, default 1: on a shared machine more
threads than free cores slow PyTorch down by an order of magnitude). Printed as ratios against the named
peer; absolute numbers depend on the machine and its load.

    pip install -e .[bench]   # neuralpredictors (and OASIS for the spikes benchmarks)
    python benchmarks/bench_v1.py [--neurons 5000] [--steps 10] [--batch 64] [--threads 1] [--skip-vislab]
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import json
import math
import os
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
SENSORIUM_TRIALS, SENSORIUM_NEURONS = 4472, 5335
FEATURES = (64, 28, 56)  # SOTA_CORE's output on 36x64 images (9x9 'valid' first layer)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def encoder(neurons: int, readout: str = "gaussian") -> Any:  # the SOTA core + one readout
    from vislab.families.v1.encoder import build_encoder

    ro: dict[str, Any] = {"kind": readout, "gamma": 0.0076}
    if readout == "gaussian":
        ro.update(init_sigma=0.1, init_mu_range=0.3)
    return build_encoder(SOTA_CORE, ro, {"s": {"num_neurons": neurons, "image_shape": [1, H, W]}}, "elu1")


def time_loop(model: Any, forward: Any, after_step: Any, neurons: int, steps: int, batch: int) -> dict[str, Any]:
    """The in-memory loop both peers run: the same data, Poisson loss, penalties and Adam (2 warm-up steps)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), lr=0.009)
    x = torch.randn(8, batch, 1, H, W)
    y = torch.poisson(torch.full((8, batch, neurons), 1.0))
    scale = math.sqrt(SENSORIUM_TRIALS / batch)

    def step(i: int) -> None:
        rates = forward(x[i % 8])
        loss = scale * F.poisson_nll_loss(rates, y[i % 8], log_input=False, reduction="sum") + model.regularizer()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        after_step()

    for i in range(2):
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    dt = time.perf_counter() - t0
    return {"samples_per_s": steps * batch / dt, "peak_rss_mb": peak_rss_mb()}


def child_plain(neurons: int, steps: int, batch: int) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    model = encoder(neurons)
    return time_loop(model, lambda x: model(x, "s"), model.constrain, neurons, steps, batch)


def neuralpredictors_encoder(neurons: int) -> Any:
    """The SENSORIUM 2022 baseline with neuralpredictors' own layers (sensorium/models/models.py settings)."""
    # neuralpredictors 0.3.0, the newest on PyPI, imports `collections.Iterable` (gone since Python 3.10)
    collections.Iterable = collections.abc.Iterable  # type: ignore[attr-defined]
    import torch
    from neuralpredictors.layers.cores import Stacked2dCore
    from neuralpredictors.layers.readouts import FullGaussian2d

    core = Stacked2dCore(input_channels=1, hidden_channels=64, input_kern=9, hidden_kern=7, layers=4,
                         gamma_input=6.3831, gamma_hidden=0.0, skip=0, final_nonlinearity=True, bias=False,
                         momentum=0.9, pad_input=False, batch_norm=True, hidden_dilation=1, laplace_padding=None,
                         input_regularizer="LaplaceL2norm", stack=-1, depth_separable=True, linear=False,
                         attention_conv=False, hidden_padding=None, use_avg_reg=False)
    shape = tuple(core(torch.zeros(1, 1, H, W)).shape[1:])
    readout = FullGaussian2d(shape, neurons, bias=True, init_mu_range=0.3, init_sigma=0.1, gauss_type="full",
                             feature_reg_weight=0.0076)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.core, self.readout = core, readout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.elu(self.readout(self.core(x))) + 1  # ELU + 1, as in sensorium

        def regularizer(self) -> torch.Tensor:
            return self.core.regularizer() + self.readout.regularizer()

    return Encoder()


def child_neuralpredictors(neurons: int, steps: int, batch: int) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    model = neuralpredictors_encoder(neurons)
    return time_loop(model, model, lambda: None, neurons, steps, batch)


def child_vislab(neurons: int, steps: int, batch: int, data: str) -> dict[str, Any]:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback

    from vislab.families.v1.module import datamodule, module
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
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps + 2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[timer], use_distributed_sampler=False)
    trainer.fit(module(cfg, dm.meta), datamodule=dm)
    dt = timer.t[-1] - timer.t[1]  # from the end of the 2nd step: the same warm-up as `plain`
    return {"samples_per_s": (len(timer.t) - 2) * batch / dt, "peak_rss_mb": peak_rss_mb()}


def child_readout(neurons: int, readout: str, batch: int) -> dict[str, Any]:
    """One Adam training step of a readout alone, on the SOTA core's feature map (the core is not run: its
    activations would swamp the readout's memory in the RSS)."""
    import torch

    from vislab.families.v1.readouts import FactorizedReadout, GaussianReadout

    torch.manual_seed(0)
    shape = FEATURES
    feats = torch.randn(batch, *shape)
    model = FactorizedReadout(shape, neurons) if readout == "factorized" else GaussianReadout(shape, neurons)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        loss = model(feats).sum() + model.regularizer()
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = sum(p.numel() for p in model.parameters())
    # parameters + gradients + Adam's two moments, and the (B, C, N) intermediate and its gradient
    analytic = (4 * params + 2 * batch * shape[0] * neurons) * 4 / 2**20
    return {"peak_rss_mb": peak_rss_mb(), "readout_params": params, "analytic_mb": analytic}


def run_child(args: list[str], threads: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_shards(root: Path, neurons: int, trials: int) -> Path:
    """Simulated trials of `neurons` neurons written through the real importer (static layout)."""
    from vislab.families.v1.importers.static_v1 import run as import_static
    from vislab.families.v1.simulate import SimulationConfig, simulate

    cfg = SimulationConfig(sessions=1, neurons=neurons, train=trials, validation=64, test_images=8, repeats=2)
    simulate(root / "src", cfg)
    import_static(root / "src", root / "shards", workers=2, log=lambda s: None)
    return root / "shards"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--neurons", type=int, default=5000)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch threads of every case")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--skip-vislab", action="store_true", help="skip the Lightning + shards case")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        kind, *rest = a.child
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        fn = {"plain": lambda: child_plain(int(rest[0]), int(rest[1]), int(rest[2])),
              "vislab": lambda: child_vislab(int(rest[0]), int(rest[1]), int(rest[2]), rest[3]),
              "neuralpredictors": lambda: child_neuralpredictors(int(rest[0]), int(rest[1]), int(rest[2])),
              "readout": lambda: child_readout(int(rest[0]), rest[1], int(rest[2]))}[kind]
        print(json.dumps(fn()))
        return

    n, steps, batch, th = a.neurons, a.steps, a.batch, a.threads
    print(f"# V1 benchmark: {n} neurons, {H}x{W} images, batch {batch}, {steps} timed steps, {th} thread(s)")
    plain = run_child(["plain", str(n), str(steps), str(batch)], th)
    print(f"plain PyTorch loop   {plain['samples_per_s']:8.1f} samples/s   peak RSS {plain['peak_rss_mb']:7.0f} MB")
    npr = run_child(["neuralpredictors", str(n), str(steps), str(batch)], th)
    print(f"neuralpredictors     {npr['samples_per_s']:8.1f} samples/s   peak RSS {npr['peak_rss_mb']:7.0f} MB  "
          f"(measured: Stacked2dCore + FullGaussian2d, same loop)")
    print(f"ratio vislab's Encoder / neuralpredictors: throughput {plain['samples_per_s'] / npr['samples_per_s']:.2f}, "
          f"peak memory {plain['peak_rss_mb'] / npr['peak_rss_mb']:.2f}")
    if not a.skip_vislab:
        with tempfile.TemporaryDirectory(prefix="bench-v1-") as tmp:
            data = make_shards(Path(tmp), n, trials=max(512, 2 * steps * batch))
            vis = run_child(["vislab", str(n), str(steps), str(batch), str(data)], th)
        print(f"vislab (Lightning+shards) {vis['samples_per_s']:8.1f} samples/s   peak RSS {vis['peak_rss_mb']:7.0f} MB")
        print(f"ratio vislab / plain: throughput {vis['samples_per_s'] / plain['samples_per_s']:.2f}, "
              f"peak memory {vis['peak_rss_mb'] / plain['peak_rss_mb']:.2f}")

    base = run_child(["readout", "1", "gaussian", str(batch)], th)
    print(f"\n# readout memory: one Adam step of the readout alone on a {FEATURES} feature map, batch {batch}; "
          f"peak RSS above a 1-neuron readout ({base['peak_rss_mb']:.0f} MB), and counted (params x 4 + 2 B C N floats)")
    print(f"{'neurons':>8} {'factorized MB':>14} {'gaussian MB':>12} {'ratio':>6} {'counted f/g MB':>15} "
          f"{'fact. params':>13} {'gauss params':>13}")
    for neurons in (1000, 5000, 20000):
        fac = run_child(["readout", str(neurons), "factorized", str(batch)], th)
        gau = run_child(["readout", str(neurons), "gaussian", str(batch)], th)
        df, dg = fac["peak_rss_mb"] - base["peak_rss_mb"], gau["peak_rss_mb"] - base["peak_rss_mb"]
        print(f"{neurons:>8} {df:>14.0f} {dg:>12.0f} {df / max(dg, 1.0):>6.1f} "
              f"{fac['analytic_mb']:>7.0f}/{gau['analytic_mb']:<7.0f} {fac['readout_params']:>13,} {gau['readout_params']:>13,}")
    print("the factorized readout holds N x (H'W' + C) weights (x4 with gradients and Adam): 1,568 spatial weights per "
          "neuron here, 100 MB of state per 4k neurons; the Gaussian readout holds N x (C + 7). Both pass a (B, C, N) "
          "tensor. Use the Gaussian readout for recordings of thousands of neurons, large feature maps, or many sessions.")

    one = run_child(["plain", str(SENSORIUM_NEURONS), str(steps), str(batch)], 1)
    peer = run_child(["neuralpredictors", str(SENSORIUM_NEURONS), str(steps), str(batch)], 1)
    epoch, peer_epoch = SENSORIUM_TRIALS / one["samples_per_s"], SENSORIUM_TRIALS / peer["samples_per_s"]
    print(f"\n# one thread, {SENSORIUM_NEURONS} neurons, epoch of {SENSORIUM_TRIALS} trials: vislab's Encoder "
          f"{one['samples_per_s']:.1f} samples/s -> {epoch:.0f} s; neuralpredictors (measured in this run) "
          f"{peer['samples_per_s']:.1f} samples/s -> {peer_epoch:.0f} s: ratio {peer_epoch / epoch:.2f}x")


if __name__ == "__main__":
    main()
