"""The README's leave-one-dataset-out table: CNN, CNN ensemble, STM and OASIS on the CASCADE ground truth.

    nice -n 10 python benchmarks/spikes_lodo.py --data shards/cascade [--runs runs] [--epochs 3]

Needs the shards (`vislab shard ../shared/data/cascade --out shards/cascade`) and OASIS
(`pip install -e .[bench]`). Runs
  1. `vislab crossval configs/spikes/cnn.yaml` (5-member ensemble): column "CNN" is the mean score of the single
     members (one network), "CNN ensemble" the score of their average;
  2. `vislab crossval configs/spikes/stm.yaml`: the spike-triggered mixture (Theis et al. 2016);
  3. OASIS (Friedrich et al. 2017, PyPI `oasis-deconv`, unsupervised: no training) on every recording, AR(2)
     with the L1 penalty it estimates itself, on the trace resampled to 25 Hz exactly as the networks see it,
     its spikes smoothed by a Gaussian of 0.08 s (raw OASIS spikes score 0.26 on DS01/06/16/17/20; smoothed
     0.35 / 0.38 / 0.38 / 0.37 / 0.34 at 0.04 / 0.08 / 0.12 / 0.16 / 0.24 s: the best one is used for all);
and prints one markdown table: Pearson correlation with the true spike counts in 40 ms bins per neuron,
averaged per dataset, then over datasets. Every fold is a resumable run: re-running skips finished folds.
`--epochs` shortens each fold's training (the shipped config trains longer); the wall time is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OASIS_SMOOTHING_S = 0.08


def crossval(config: str, data: Path, runs: Path, experiment: str, overrides: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "vislab.train.cli", "crossval", str(REPO / config), f"data.root={data}",
           f"runs_root={runs}", f"experiment={experiment}", "trainer.progress_bar=none", *overrides]
    print("$ vislab " + " ".join(cmd[3:]), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")})
    return json.loads((runs / f"{experiment}-lodo" / "crossval.json").read_text())


def oasis_scores(data: Path, model_rate: float = 25.0) -> dict[str, Any]:
    """OASIS on every test recording (all neurons count as unseen: it learns nothing)."""
    from oasis.functions import deconvolve
    from scipy.ndimage import gaussian_filter1d

    from vislab.data.manifest import Manifest
    from vislab.data.pipeline import _SkipStats, read_shard
    from vislab.families.spikes.calcium import rebin_counts, resample_trace
    from vislab.families.spikes.metrics import merge, recording_stats, report
    from vislab.families.spikes.samples import RecordingDecode

    test = data / "test"
    manifest = Manifest.load(test)
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    decode = RecordingDecode()
    for url, shard in zip(manifest.urls(test), manifest.shards, strict=True):
        for raw in read_shard(url, shard.count, "raise", _SkipStats()):
            rec = decode(raw)
            rate = float(rec["frame_rate"])
            y = resample_trace(rec["trace"], rate, model_rate)
            if len(y) < 32:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, s, _, _, _ = deconvolve(y, g=(None, None), penalty=1)
            s = gaussian_filter1d(s, OASIS_SMOOTHING_S * model_rate)
            pred = rebin_counts(s[None], model_rate, rate, num_out=len(rec["trace"]))
            key = (rec["dataset"], rec["neuron"])
            stats[key] = merge(stats.get(key), recording_stats(pred, rec, 0.04))
    return report(stats, seen=set(), bin_s=0.04)


def markdown(rows: dict[str, dict[str, Any]], columns: list[str]) -> str:
    lines = ["| dataset | neurons | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for ds, r in rows.items():
        cells = " | ".join("" if r.get(c) is None or math.isnan(r[c]) else f"{r[c]:.3f}" for c in columns)
        lines.append(f"| {ds} | {r.get('neurons', '')} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="calcium data root written by `vislab shard`")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--epochs", type=int, default=3, help="training epochs per fold")
    p.add_argument("--out", type=Path, default=None, help="JSON of every number (default: RUNS/spikes_lodo.json)")
    a = p.parse_args()
    t0 = time.time()
    timing = {}
    fold = [f"trainer.max_epochs={a.epochs}"]
    t = time.time()
    cnn = crossval("configs/spikes/cnn.yaml", a.data, a.runs, "lodo-cnn", fold)
    timing["cnn"] = time.time() - t
    t = time.time()
    stm = crossval("configs/spikes/stm.yaml", a.data, a.runs, "lodo-stm", fold)
    timing["stm"] = time.time() - t
    t = time.time()
    oasis = oasis_scores(a.data)
    timing["oasis"] = time.time() - t
    columns = ["CNN", "CNN ensemble (5)", "STM", "OASIS"]  # OASIS: AR(2), output smoothed 0.08 s
    rows: dict[str, dict[str, Any]] = {}
    for ds, r in cnn["datasets"].items():
        rows[ds] = {"neurons": r["neurons"], "CNN": r["corr_member"], "CNN ensemble (5)": r["corr"],
                    "STM": stm["datasets"].get(ds, {}).get("corr"), "OASIS": oasis["datasets"].get(ds, {}).get("corr")}
    mean = {c: float(np.nanmean([r[c] for r in rows.values() if r[c] is not None])) for c in columns}
    rows["**mean over datasets**"] = {"neurons": sum(r["neurons"] for r in rows.values()), **mean}
    table = markdown(rows, columns)
    result = {"table": table, "rows": rows, "timing_s": timing, "wall_time_s": time.time() - t0,
              "epochs_per_fold": a.epochs, "cnn": cnn, "stm": stm, "oasis": {k: oasis[k] for k in ("corr", "datasets")}}
    out = a.out or a.runs / "spikes_lodo.json"
    out.write_text(json.dumps(result, indent=1))
    print(table)
    print(f"\nCNN - STM: {mean['CNN'] - mean['STM']:+.3f}; CNN - OASIS: {mean['CNN'] - mean['OASIS']:+.3f}; "
          f"ensemble - CNN: {mean['CNN ensemble (5)'] - mean['CNN']:+.3f}")
    print("wall time: " + ", ".join(f"{k} {v / 60:.0f} min" for k, v in timing.items()) + f" ({out})")


if __name__ == "__main__":
    main()
