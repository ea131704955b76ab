"""Check `vislab infer` on ground truth the way a user runs it: one (num_neurons, T) .npy per dataset at the
recording's own frame rate, through the CLI, then scored against the true spikes.

    python benchmarks/spikes_infer_check.py MODEL --data shards/cascade [--split val] [--out DIR]

For every dataset, the recordings of the split (val: the neurons the model did not train on) that share
the dataset's most common frame rate are stacked into one NaN-padded array, written as .npy, and given to
`vislab infer MODEL traces.npy --frame-rate F --out spikes.npy` in a subprocess. The output is scored with
the same 40 ms correlation as `vislab test`; the two should agree (they share the pipeline, but here the
input went through files, NaN padding and the CLI).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def recordings(data: Path, split: str) -> dict[str, list[dict[str, Any]]]:
    from vislab.data.manifest import Manifest
    from vislab.data.pipeline import _SkipStats, read_shard
    from vislab.families.spikes.samples import RecordingDecode

    m = Manifest.load(data / split)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for url, shard in zip(m.urls(data / split), m.shards, strict=True):
        for raw in read_shard(url, shard.count, "raise", _SkipStats()):
            rec = RecordingDecode()(raw)
            out[rec["dataset"]].append(rec)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--out", type=Path, default=Path("runs/spikes_infer_check"))
    a = p.parse_args()
    from vislab.families.spikes.metrics import merge, recording_stats, report

    a.out.mkdir(parents=True, exist_ok=True)
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    for ds, recs in sorted(recordings(a.data, a.split).items()):
        rate = Counter(round(r["frame_rate"], 3) for r in recs).most_common(1)[0][0]
        recs = [r for r in recs if round(r["frame_rate"], 3) == rate]
        length = max(len(r["trace"]) for r in recs)
        traces = np.full((len(recs), length), np.nan, dtype=np.float32)
        for i, r in enumerate(recs):
            traces[i, : len(r["trace"])] = r["trace"]
        np.save(a.out / f"{ds}.npy", traces)
        cmd = [sys.executable, "-m", "vislab.train.cli", "infer", str(a.model), str(a.out / f"{ds}.npy"),
               "--frame-rate", str(rate), "--out", str(a.out / f"{ds}_spikes.npy")]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        print(f"{ds}: {done.stdout.strip()}", file=sys.stderr)
        spikes = np.load(a.out / f"{ds}_spikes.npy")
        for i, r in enumerate(recs):
            key = (ds, r["neuron"])
            stats[key] = merge(stats.get(key), recording_stats(spikes[i : i + 1, : len(r["trace"])], r, 0.04))
    rep = report(stats, seen=set(), bin_s=0.04)
    summary = {ds: round(d["corr"], 4) for ds, d in rep["datasets"].items()}
    (a.out / "scores.json").write_text(json.dumps({"mean": rep["corr"], "datasets": summary}, indent=1))
    for ds, c in summary.items():
        print(f"{ds:40s} {c:.3f}")
    print(f"{'mean over datasets':40s} {rep['corr']:.3f}  ({rep['neurons_unseen']} neurons, via vislab infer)")


if __name__ == "__main__":
    main()
