"""Restart bookkeeping of a run that Slurm starts again and again (requeue after preemption or failure).

Every start of a job appends one record to `<run_dir>/restarts.jsonl`; once training is under way, rank 0
fills in the global step it resumed at. A start "made progress" when it resumed at a later step than every
earlier start. A job that keeps coming back to the same step (a crash that recurs, a node that always
fails, a time limit shorter than the start-up) is stopped after `slurm.max_requeues` such starts instead
of being requeued forever.

The batch script calls this module before `srun`, without torch (fast):

    python -m vislab.train.slurm.restarts begin RUN_DIR --max-requeues 3    # exit 4 = give up
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

RESTARTS_FILE = "restarts.jsonl"
EXIT_GAVE_UP = 4
"""Exit code of a job that stopped requeueing itself (no progress in `max_requeues` starts)."""


def read_starts(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / RESTARTS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash mid-write is not a start
            continue
    return out


def starts_without_progress(starts: list[dict[str, Any]]) -> int:
    """How many of the latest starts resumed at no later step than some start before them."""
    best: int | None = None
    streak = 0
    for s in starts:
        step = s.get("step")
        if step is not None and (best is None or step > best):
            best, streak = step, 0
        elif best is not None or step is None:
            streak += 1  # never reached training, or resumed where an earlier start already was
    return streak


def _append(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / RESTARTS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def begin(run_dir: Path, max_requeues: int) -> int:
    """Record a start; EXIT_GAVE_UP (and a message naming the step) when the run no longer makes progress."""
    starts = read_starts(run_dir)
    stuck = starts_without_progress(starts)
    if starts and stuck >= max_requeues:
        steps = [s.get("step") for s in starts[-stuck - 1:]]
        print(f"[vislab] giving up: the last {stuck} restarts of {run_dir} made no progress (resumed at steps "
              f"{steps}); fix the cause (see the slurm-*.err logs) and resubmit with `sbatch {run_dir}/job.sbatch`, "
              f"or raise slurm.max_requeues (now {max_requeues})", file=sys.stderr, flush=True)
        return EXIT_GAVE_UP
    _append(run_dir, {
        "start": len(starts),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
        "nodes": os.environ.get("SLURM_JOB_NODELIST"),
        "time": time.time(),
        "step": None,
    })
    return 0


def record_step(run_dir: Path, step: int, **extra: Any) -> None:
    """Rank 0, when training starts: the step this start resumed at, into the newest record."""
    starts = read_starts(run_dir)
    if not starts or starts[-1].get("step") is not None:  # started by hand (srun vislab fit), not by job.sbatch
        starts.append({"start": len(starts), "job_id": os.environ.get("SLURM_JOB_ID"), "time": time.time()})
    starts[-1].update(step=step, **extra)
    _rewrite(run_dir, starts)


def update_last(run_dir: Path, **fields: Any) -> None:
    """Add facts to the newest record (time of the first step, checkpoint save time at a signal)."""
    starts = read_starts(run_dir)
    if starts:
        starts[-1].update(fields)
        _rewrite(run_dir, starts)


def _rewrite(run_dir: Path, starts: list[dict[str, Any]]) -> None:
    path = run_dir / RESTARTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(s) + "\n" for s in starts))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vislab.train.slurm.restarts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["begin"])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--max-requeues", type=int, required=True)
    a = p.parse_args(argv)
    return begin(a.run_dir, a.max_requeues)


if __name__ == "__main__":
    sys.exit(main())
