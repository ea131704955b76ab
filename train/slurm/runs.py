"""`vislab runs [RUNS_ROOT] [--experiment E] [--json]`: every run with its state, progress and best checkpoint.

State: the Slurm job's state (squeue while it is queued or running, then sacct / the job-completion file)
for submitted runs; otherwise from the files (`summary.json` written = finished). Progress: the newest
row of the CSV metrics (global step, the monitored metric) and how often the job was restarted. Best
checkpoint: `summary.json`'s once the run finished, else the top-k checkpoint with the best monitored value.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vislab.core.checkpoints import read_summary
from vislab.train.config import from_dict
from vislab.train.families import monitor_of
from vislab.train.heartbeat import run_status, wall_time
from vislab.train.slurm import cluster
from vislab.train.slurm.restarts import read_starts


def _metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """Rows of every logs/version_*/metrics.csv (one version per start), oldest first."""
    rows: list[dict[str, str]] = []
    versions = sorted((run_dir / "logs").glob("version_*"), key=lambda p: int(p.name.split("_")[-1]))
    for v in versions:
        path = v / "metrics.csv"
        if path.is_file():
            with open(path, newline="") as f:
                rows += list(csv.DictReader(f))
    return rows


def _latest(rows: list[dict[str, str]], key: str) -> float | None:
    for row in reversed(rows):
        if row.get(key) not in (None, ""):
            return float(row[key])
    return None


def _monitor(run_dir: Path) -> tuple[str, str] | None:
    """The run's monitored metric and mode, from its config.yaml (None if that no longer loads)."""
    try:
        cfg = from_dict(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")))  # type: ignore[arg-type]
    except Exception:  # a run written by an older vislab, a config edited by hand: list it all the same
        return None
    return monitor_of(cfg)


def best_checkpoint(run_dir: Path, rows: list[dict[str, str]], metric: str, mode: str) -> str | None:
    """A finished run's best checkpoint (its summary's); while it runs, the top-k one with the best value of
    the monitored metric in metrics.csv (Lightning names checkpoints by step)."""
    best = read_summary(run_dir).get("best_checkpoint")
    if best:
        return str(best)
    scored = []
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        m = re.search(r"step(\d+)", ckpt.name)
        if m is None:
            continue
        values = [float(r[metric]) for r in rows if r.get(metric) and r.get("step") and int(r["step"]) <= int(m[1])]
        if values:
            scored.append((values[-1], ckpt))
    if not scored:
        return None
    pick = max(scored) if mode == "max" else min(scored)
    return str(pick[1])


SLURM_ACTIVE = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"}
SLURM_FAILED = {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "CANCELLED", "BOOT_FAIL", "DEADLINE"}


def status_of(run_dir: Path, slurm_state: str | None) -> tuple[str, str]:
    """(running | queued | finished | failed | preempted | unknown, why): the Slurm state where the job is
    known to Slurm and not finished, else the run's own files (summary.json, heartbeat.json)."""
    status, why = run_status(run_dir)
    if status == "finished" or slurm_state is None:
        return status, why
    base = slurm_state.split()[0].rstrip("+")  # 'CANCELLED by 0', 'COMPLETED+'
    if base in SLURM_ACTIVE:
        return "queued", f"Slurm: {slurm_state}"
    if base == "RUNNING":
        return "running", f"Slurm: RUNNING ({why})"
    if base == "PREEMPTED":
        return "preempted", f"Slurm: {slurm_state}"
    if base in SLURM_FAILED and status in ("running", "unknown"):
        return "failed", f"Slurm: {slurm_state}"
    return status, why


def test_metric(summary: dict[str, Any], monitor: str) -> tuple[str, float] | None:
    """The test counterpart of the monitored metric (val/acc1 -> test/acc1), else the first test metric."""
    metrics = summary.get("test_metrics") or {}
    name = "test/" + monitor.split("/", 1)[-1]
    if name in metrics:
        return name, float(metrics[name])
    first = next(iter(sorted(metrics)), None)
    return (first, float(metrics[first])) if first else None


def describe(run_dir: Path, states: dict[str, str]) -> dict[str, Any]:
    submit = json.loads((run_dir / "submit.json").read_text()) if (run_dir / "submit.json").is_file() else {}
    starts = read_starts(run_dir)
    job_ids = [submit.get("job_id")] + [s.get("job_id") for s in starts]  # array tasks also have their own id
    slurm_state = next((states[j] for j in reversed(job_ids) if j and j in states), None)
    state = slurm_state
    if state is None:
        state = "FINISHED" if (run_dir / "summary.json").is_file() else ("UNKNOWN" if submit else "LOCAL")
    status, why = status_of(run_dir, slurm_state)
    rows = _metric_rows(run_dir)
    metric, mode = _monitor(run_dir) or ("?", "max")
    step = _latest(rows, "step")
    summary = read_summary(run_dir)
    test = test_metric(summary, metric)
    return {
        "run": f"{run_dir.parent.name}/{run_dir.name}", "run_dir": str(run_dir), "job_id": submit.get("job_id"),
        "status": status, "why": why, "state": state, "slurm_state": slurm_state,
        "restarts": max(0, len(starts) - 1), "step": int(step) if step is not None else None,
        "monitor": metric, "value": _latest(rows, metric), "train_loss": _latest(rows, "train/loss"),
        "test_metric": test[0] if test else None, "test_value": test[1] if test else None,
        "wall_time_s": wall_time(run_dir, summary, running=status == "running"),
        "best_checkpoint": best_checkpoint(run_dir, rows, metric, mode),
    }


def find_runs(root: Path, experiment: str | None = None) -> list[Path]:
    pattern = f"{experiment}/*/config.yaml" if experiment else "*/*/config.yaml"
    return sorted((p.parent for p in root.glob(pattern)), key=lambda p: p.stat().st_mtime)


def _short(path: str | None, run_dir: str) -> str:
    """A checkpoint path relative to its run directory when it lies inside it."""
    if not path:
        return "-"
    p = Path(path)
    return str(p.relative_to(run_dir)) if p.is_relative_to(run_dir) else path


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vislab runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", nargs="?", type=Path, default=Path("runs"), help="runs root (default: runs)")
    p.add_argument("--experiment", help="only this experiment")
    p.add_argument("--json", action="store_true", help="one JSON object per run, one per line")
    p.add_argument("--watch", nargs="?", type=float, const=10.0, metavar="SECONDS",
                   help="refresh every SECONDS (default 10) until Ctrl-C")
    a = p.parse_args(argv)
    if a.watch is None:
        return show(a)
    try:
        while True:
            if sys.stdout.isatty():
                print("\033[H\033[2J", end="")  # clear the terminal, like watch(1)
            print(f"vislab runs {a.root} -- {time.strftime('%H:%M:%S')}, every {a.watch:g} s (Ctrl-C to stop)")
            show(a)
            sys.stdout.flush()
            time.sleep(max(a.watch, 0.1))
    except KeyboardInterrupt:
        return 0


def show(a: argparse.Namespace) -> int:
    run_dirs = find_runs(a.root.resolve(), a.experiment)
    ids = []
    for d in run_dirs:
        submit = d / "submit.json"
        if submit.is_file():
            ids.append(json.loads(submit.read_text())["job_id"])
            ids += [s["job_id"] for s in read_starts(d) if s.get("job_id")]
    states = cluster.job_states(sorted(set(ids)))
    rows = [describe(d, states) for d in run_dirs]
    if a.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    if not rows:
        print(f"no runs under {a.root}")
        return 0
    header = ["RUN", "STATUS", "JOB", "SLURM", "RESTARTS", "STEP", "WALL", "METRIC", "TEST", "TRAIN_LOSS",
              "BEST_CHECKPOINT"]
    table = [header] + [[r["run"], r["status"], r["job_id"] or "-", r["slurm_state"] or "-", str(r["restarts"]),
                         str(r["step"] or "-"), _wall(r["wall_time_s"]), f"{r['monitor']}={_fmt(r['value'])}",
                         f"{r['test_metric']}={_fmt(r['test_value'])}" if r["test_metric"] else "-",
                         _fmt(r["train_loss"]), _short(r["best_checkpoint"], r["run_dir"])]
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for r in rows:
        if r["status"] in ("failed", "preempted") and r["why"]:
            print(f"{r['run']}: {r['status']}: {r['why']}")
    return 0
