"""`vislab demo`: the main job on embedded data, end to end, in a few minutes on a laptop CPU.

scikit-learn's digits -> ImageFolder tree -> shards (`vislab shard`) -> 2-process DDP fit with gloo
(`vislab fit`, wandb offline) -> test of the best checkpoint -> export -> prints run dir and accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from vislab.data.importers.digits import write_digits_tree
from vislab.data.importers.imagefolder import run as shard_imagefolder

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "classify" / "digits.yaml"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vislab demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("demo_data"), help="where the digits and shards go")
    p.add_argument("overrides", nargs="*", help="key=value overrides for configs/classify/digits.yaml")
    a = p.parse_args(argv)

    src, root = a.workdir / "digits_png", a.workdir / "digits"
    if not (src / "test").is_dir():
        write_digits_tree(src)
    shard_imagefolder(src, root, shard_size_mb=0.05, workers=2)

    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    cmd = [sys.executable, "-m", "vislab.train.cli", "fit", str(CONFIG), f"data.root={root}", *a.overrides]
    print("$ " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return proc.returncode
    run_dir = Path(proc.stdout.strip().splitlines()[-1])

    from vislab.train.export import export_run  # torch and Lightning: kept off the CLI's start-up path

    export_dir = export_run(run_dir, run_dir / "export")
    summary = json.loads((run_dir / "summary.json").read_text())
    acc = summary["test_metrics"].get("test/acc1", float("nan"))
    print(f"export:        {export_dir}")
    print(f"wandb:         {summary['wandb']['mode']} ({run_dir / 'wandb'})")
    print(f"test accuracy: {acc:.4f} ({summary['test_split']} split, {summary['num_processes']} processes, "
          f"{summary['wall_time_s']:.0f} s)")
    print(f"run directory: {run_dir}")
    return 0
