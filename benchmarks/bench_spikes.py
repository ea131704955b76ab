"""Spike-inference speed on CPU: the window model vs the fully convolutional model (same weights, same
numbers), end to end through `vislab infer`'s pipeline (30 Hz -> 25 Hz -> network -> 30 Hz).

    python benchmarks/bench_spikes.py [--neurons 1000] [--minutes 10] [--threads 1] [--ensemble 5]

The recording is 1,000 neurons x 10 minutes at 30 Hz (18 M frames). The window model (CASCADE's way: one
64-frame window per frame) is timed on `--window-neurons` of them and scaled (its cost is linear in frames);
the fully convolutional model runs all of them. Each mode runs in its own process so its peak memory
(max RSS) is its own. Printed: input frames/s per mode and the ratio to the window model, both measured here.

Peers: OASIS (`oasis-deconv`, `pip install -e .[bench]`; Friedrich et al. 2017, the unsupervised baseline of
`benchmarks/spikes_lodo.py`) is MEASURED in the same run on `--oasis-neurons` of the same traces (AR(1)
deconvolution at the recording's own rate, one neuron at a time, scaled). CASCADE itself is NOT measured:
its code is not on PyPI (`pip download cascade2p` finds nothing) and installs only from its GitHub
repository, which this machine cannot reach; its ~40k frames/s per CPU thread is QUOTED from Rupprecht et al.
2021 (Nat. Neurosci. 24:1324, Keras on CPU) and printed as such. Timings on a shared machine are noisy:
compare the ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CASCADE_QUOTED_FRAMES_PER_S_PER_THREAD = 40_000  # quoted (Rupprecht et al. 2021), not measured: not on PyPI


def measure_oasis(neurons: int, minutes: float) -> dict[str, float]:
    """OASIS AR(1) deconvolution (oasis-deconv) of the same random-walk dF/F, one neuron at a time."""
    import numpy as np
    from oasis.functions import deconvolve

    frames = int(minutes * 60 * 30.0)
    rng = np.random.default_rng(0)
    traces = np.cumsum(rng.normal(0, 0.02, size=(neurons, frames)), axis=1)
    deconvolve(traces[0, :2000], penalty=1)  # warm-up
    t0 = time.perf_counter()
    for trace in traces:
        deconvolve(trace, penalty=1)
    seconds = time.perf_counter() - t0
    return {"frames": float(neurons * frames), "seconds": seconds, "frames_per_s": neurons * frames / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(mode: str, neurons: int, minutes: float, threads: int, ensemble: int) -> dict[str, float]:
    """Run in a child process: time `infer` on random-walk dF/F; report frames/s and peak RSS."""
    if mode == "oasis":
        return measure_oasis(neurons, minutes)
    import numpy as np
    import torch

    from vislab.families.spikes.inference import infer
    from vislab.families.spikes.networks import SpikeCNN

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = SpikeCNN(ensemble_size=ensemble).eval()  # CASCADE's sizes (30/40/50 filters, dense 30)
    rate = 30.0
    frames = int(minutes * 60 * rate)
    rng = np.random.default_rng(0)
    traces = np.cumsum(rng.normal(0, 0.02, size=(neurons, frames)), axis=1).astype(np.float32)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    infer(net, traces[:2, :2000], rate, 25.0, mode=mode)  # warm-up
    t0 = time.perf_counter()
    out = infer(net, traces, rate, 25.0, mode=mode)
    seconds = time.perf_counter() - t0
    assert out.shape == traces.shape
    return {"frames": float(neurons * frames), "seconds": seconds, "frames_per_s": neurons * frames / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": rss0 / 1024, "input_mb": traces.nbytes / 2**20}


def run_child(mode: str, neurons: int, a: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", mode, "--neurons", str(neurons), "--minutes", str(a.minutes),
           "--threads", str(a.threads), "--ensemble", str(a.ensemble)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--neurons", type=int, default=1000)
    p.add_argument("--window-neurons", type=int, default=20, help="neurons timed in window mode (then scaled)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (frames/s are also given per thread)")
    p.add_argument("--ensemble", type=int, default=1, help="ensemble members (the shipped model has 5)")
    p.add_argument("--oasis-neurons", type=int, default=50, help="neurons timed with OASIS (then scaled)")
    p.add_argument("--child", choices=["trace", "window", "oasis"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(measure(a.child, a.neurons, a.minutes, a.threads, a.ensemble)))
        return
    total = a.neurons * a.minutes * 60 * 30
    print(f"spike inference, {a.neurons} neurons x {a.minutes:g} min at 30 Hz = {total / 1e6:.1f} M frames, "
          f"model at 25 Hz, {a.ensemble} member(s), {a.threads} CPU thread(s)")
    window = run_child("window", min(a.window_neurons, a.neurons), a)
    trace = run_child("trace", a.neurons, a)
    oasis = run_child("oasis", min(a.oasis_neurons, a.neurons), a)
    for name, r in (("window model", window), ("fully convolutional", trace)):
        per_thread = r["frames_per_s"] / a.threads
        print(f"{name:20s} {r['frames_per_s']:12,.0f} frames/s  ({per_thread:,.0f} per thread; "
              f"{total / r['frames_per_s'] / 60:6.2f} min for the whole recording; measured on "
              f"{r['frames'] / (a.minutes * 60 * 30):.0f} neurons)")
        print(f"{'':20s} peak RSS {r['peak_rss_mb']:.0f} MB = {r['rss_before_mb']:.0f} MB (python + torch + input "
              f"{r['input_mb']:.0f} MB) + {r['peak_rss_mb'] - r['rss_before_mb']:.0f} MB during inference")
    print(f"{'OASIS (measured)':20s} {oasis['frames_per_s']:12,.0f} frames/s  (one thread, AR(1), measured on "
          f"{oasis['frames'] / (a.minutes * 60 * 30):.0f} neurons)")
    print(f"fully convolutional / window model:  {trace['frames_per_s'] / window['frames_per_s']:.1f}x  (both measured)")
    print(f"fully convolutional / OASIS:         {trace['frames_per_s'] / a.threads / oasis['frames_per_s']:.1f}x "
          f"per thread  (both measured)")
    quoted = CASCADE_QUOTED_FRAMES_PER_S_PER_THREAD
    print(f"fully convolutional / CASCADE's QUOTED ~{quoted:,} frames/s per thread (Rupprecht et al. 2021; NOT "
          f"measured: CASCADE is not on PyPI): {trace['frames_per_s'] / a.threads / quoted:.1f}x per thread")
    print(f"window model / CASCADE (quoted): {window['frames_per_s'] / a.threads / quoted:.2f}x per thread")


if __name__ == "__main__":
    main()
