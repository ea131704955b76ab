"""`vislab crossval CONFIG [key=value ...]`: leave-one-dataset-out cross-validation in one command.

For every dataset D found under `data.root` (or named with --datasets), one `vislab fit` runs in its own
process with `data.exclude_datasets=[D] data.test_datasets=[D]`: it trains and validates on the other
datasets and is tested on all of D's neurons. Runs go to `<runs_root>/<experiment>-lodo/<D>/`; a fold whose
run finished (summary.json) is not run again, so an interrupted cross-validation resumes. The result,
per dataset and the mean over datasets, is written to `crossval.json` and `crossval.md` in that directory
and printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vislab.core.config import load_config, task_of
from vislab.core.errors import ConfigError
from vislab.core.progress import Progress
from vislab.data.manifest import Manifest
from vislab.families.spikes.schema import SpikesConfig, check_spikes
from vislab.families.spikes.simulate import ensure_simulated_root

COLUMNS = (("corr", "corr (ensemble)"), ("corr_member", "corr (one network)"), ("error", "error"), ("bias", "bias"))


def lodo_datasets(cfg: Any) -> list[str]:
    names = sorted(Manifest.load(Path(cfg.data.root) / "train").meta.get("datasets", {}))
    return [n for n in (cfg.data.datasets or names) if n not in cfg.data.exclude_datasets]


def run_fold(config: Path, overrides: list[str], dataset: str, experiment: str, runs_root: str) -> dict[str, Any]:
    """Fit (or reuse) the fold that leaves `dataset` out; returns its summary."""
    run_dir = Path(runs_root) / experiment / safe_name(dataset)
    if (run_dir / "summary.json").is_file():
        return json.loads((run_dir / "summary.json").read_text())
    fold = [*overrides, f"data.exclude_datasets=[{dataset}]", f"data.test_datasets=[{dataset}]",
            f"experiment={experiment}", f"run_id={safe_name(dataset)}", f"runs_root={runs_root}"]
    cmd = [sys.executable, "-m", "vislab.train.cli", "fit", str(config), *fold]
    print(f"[crossval] {dataset}: vislab fit {config} {' '.join(fold)}", file=sys.stderr, flush=True)
    t0 = time.time()
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        raise RuntimeError(f"crossval fold {dataset} failed (see {run_dir}/logs and the output above)")
    print(f"[crossval] {dataset}: done in {(time.time() - t0) / 60:.1f} min", file=sys.stderr, flush=True)
    return json.loads((run_dir / "summary.json").read_text())


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = "| dataset | neurons | " + " | ".join(title for _, title in COLUMNS) + " | fold time (min) |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for ds, r in rows.items():
        cells = " | ".join(_fmt(r.get(k)) for k, _ in COLUMNS)
        lines.append(f"| {ds} | {r.get('neurons', '')} | {cells} | {_fmt(r.get('minutes'), 1)} |")
    return "\n".join(lines)


def _fmt(v: Any, digits: int = 3) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def summarize(folds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for ds, summary in folds.items():
        report = summary["test_report"]["datasets"][ds]
        rows[ds] = {**{k: report.get(k) for k, _ in COLUMNS}, "neurons": report["neurons"],
                    "minutes": summary["wall_time_s"] / 60}
    mean = {k: _mean([r[k] for r in rows.values()]) for k, _ in COLUMNS}
    mean.update(neurons=sum(r["neurons"] for r in rows.values()), minutes=sum(r["minutes"] for r in rows.values()))
    return {"datasets": rows, "mean": mean, "table": table({**rows, "**mean** (total time)": mean})}


def _mean(values: list[Any]) -> float:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return sum(v) / len(v) if v else float("nan")


def crossval(config: Path, overrides: list[str], datasets: list[str] | None = None) -> dict[str, Any]:
    task = task_of(config, overrides)
    if task != "spikes":
        raise ConfigError([f"{config}: crossval is leave-one-dataset-out over calcium datasets (task spikes), "
                           f"not task '{task}'"])
    cfg = load_config(config, overrides, lambda task, source: (SpikesConfig, check_spikes))
    assert isinstance(cfg, SpikesConfig)
    if cfg.data.simulate.enabled:  # the folds would each make it; make it once, before listing its datasets

        ensure_simulated_root(cfg.data.simulate, Path(cfg.data.root), log=lambda s: None)
    names = datasets or lodo_datasets(cfg)
    unknown = [n for n in names if n not in lodo_datasets(cfg)]
    if unknown:
        raise ConfigError([f"--datasets: unknown dataset(s) {', '.join(unknown)} in {cfg.data.root}"])
    experiment = f"{cfg.experiment}-lodo"
    t0 = time.time()
    folds: dict[str, dict[str, Any]] = {}
    # one line per finished fold, even on a terminal: the folds' own training lines run in between
    with Progress(len(names), "crossval", "folds", mode="text", every_s=0) as progress:
        for ds in names:
            folds[ds] = run_fold(config, overrides, ds, experiment, cfg.runs_root)
            progress.update(1)
    result = {"config": str(config), "overrides": overrides, **summarize(folds),
              "wall_time_s": round(time.time() - t0, 1)}
    out = Path(cfg.runs_root) / experiment
    (out / "crossval.json").write_text(json.dumps(result, indent=1))
    (out / "crossval.md").write_text(result["table"] + "\n")
    return result


def cmd_crossval(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vislab crossval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path)
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every fold")
    p.add_argument("--datasets", nargs="+", help="only these held-out datasets (default: all under data.root)")
    a = p.parse_args(argv)
    result = crossval(a.config, a.overrides, a.datasets)
    print(result["table"])
    return 0
