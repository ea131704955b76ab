"""The batch script of `vislab submit robustness MODEL --data ROOT [flags] [--nodes N --gpus-per-node G ...]`.

`vislab submit` (train/slurm/submit.py) owns the resources and the cluster checks; this module checks the
robustness arguments exactly as the verb does (before anything is queued), fixes the output directory, and
writes the script: one `srun` task per GPU (or per CPU process), each evaluating its share of the images
(run.setup_distributed reads SLURM_NTASKS / SLURM_PROCID; the batch script sets MASTER_ADDR / MASTER_PORT).
A requeued or resubmitted job reruns the same command on the same `--out`: finished degradations and attacks
are read back from `progress/`, so a preemption costs at most one degradation.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from vislab.families.robustness.cli import prepare

SCRIPT_FILE = "job.sbatch"

TEMPLATE = """#!/bin/bash
# vislab robustness job, written by
#   {command}
# Submitting it again (`sbatch {script}`) resumes: finished degradations and attacks are read back from
# {out}/progress.
{sbatch}
#SBATCH --job-name={job_name}
#SBATCH --chdir={workdir}
#SBATCH --output={out}/slurm-%j.out
#SBATCH --error={out}/slurm-%j.err
#SBATCH --open-mode=append
#SBATCH --requeue
set -uo pipefail
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS="${{SLURM_CPUS_PER_TASK:-1}}"
unset WANDB_SERVICE
# the process group's rendezvous: the job's first node, a port from the job id (Lightning's convention)
export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export MASTER_PORT=$((15000 + SLURM_JOB_ID % 10000))
echo "[vislab] robustness job ${{SLURM_JOB_ID}} (start $((${{SLURM_RESTART_COUNT:-0}} + 1))) on ${{SLURM_JOB_NODELIST}}: {out}"
srun --kill-on-bad-exit=1 {python} -m vislab.families.robustness {args}
"""


def with_out(argv: list[str], out: Path) -> list[str]:
    """argv with `--out` set to `out` (replacing a given one)."""
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            rest.append(a)
    return [*rest, "--out", str(out)]


def job_script(argv: list[str], sbatch_lines: list[str], python: str, command: str) -> tuple[str, Path]:
    """(batch script, absolute output directory) of `vislab robustness ARGV` as a Slurm job; every argument
    is checked first (ConfigError: one line each). `sbatch_lines`: the resources, `#SBATCH --nodes=2`, ..."""
    settings = prepare(argv)[0]
    out = Path(settings.out).resolve()
    args = with_out(argv, out)
    return TEMPLATE.format(
        command=command, script=shlex.quote(str(out / SCRIPT_FILE)), out=out,
        sbatch="\n".join(sbatch_lines), job_name=f"robustness-{Path(settings.model).name}-{time.strftime('%m%d%H%M')}",
        workdir=Path.cwd(), python=shlex.quote(python), args=shlex.join(args),
    ), out
