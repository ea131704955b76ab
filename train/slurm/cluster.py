"""What the Slurm commands say: partitions and node sizes (sinfo), submission (sbatch), job states
(squeue for queued and running jobs; sacct, or `sacct -c` from the job-completion file when the
cluster has no accounting database, for finished ones). Thin wrappers, one subprocess each."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from vislab.core.errors import ConfigError


@dataclass
class Partition:
    name: str
    default: bool = False
    nodes: list[str] = field(default_factory=list)
    max_cpus: int = 0
    """CPUs of its largest node."""
    max_gpus: int = 0
    """GPUs (gres gpu) of its best-equipped node."""


def available() -> bool:
    return shutil.which("sbatch") is not None and shutil.which("sinfo") is not None


def _run(cmd: list[str], stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError([f"{cmd[0]} failed: {e}"]) from e


def _gpus(gres: str) -> int:
    """'gpu:a100:8(S:0-1),shard:4' -> 8."""
    total = 0
    for item in gres.split(","):
        m = re.match(r"gpu(?::[^:(]+)?:(\d+)", item.strip())
        if m:
            total += int(m[1])
    return total


def partitions() -> dict[str, Partition]:
    """Partitions with their nodes and node sizes, from `sinfo` (one line per node and partition)."""
    out = _run(["sinfo", "-h", "-N", "-o", "%P|%N|%c|%G"])
    if out.returncode != 0:
        raise ConfigError([f"sinfo failed (is slurmctld running?): {(out.stderr or out.stdout).strip()}"])
    parts: dict[str, Partition] = {}
    for line in out.stdout.splitlines():
        name, node, cpus, gres = line.split("|")
        part = parts.setdefault(name.rstrip("*"), Partition(name.rstrip("*"), default=name.endswith("*")))
        if node not in part.nodes:
            part.nodes.append(node)
        part.max_cpus = max(part.max_cpus, int(cpus))
        part.max_gpus = max(part.max_gpus, _gpus(gres))
    return parts


def sbatch(script: str | Path, *, test_only: bool = False) -> str:
    """Submit a batch script (a path, or the script's text for --test-only); the job id (or Slurm's estimate)."""
    if test_only:
        out = _run(["sbatch", "--test-only"], stdin=str(script))
    else:
        out = _run(["sbatch", "--parsable", str(script)])
    if out.returncode != 0:
        lines = [x.removeprefix("sbatch: error: ") for x in out.stderr.strip().splitlines() if x.strip()]
        raise ConfigError([f"sbatch refused the job: {' '.join(lines) or 'exit ' + str(out.returncode)}"])
    return (out.stderr if test_only else out.stdout).strip().split(";")[0]


def job_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: Slurm state} for the ids Slurm still knows (`12`, or `12_3` for an array task)."""
    states: dict[str, str] = {}
    if not job_ids or not available():
        return states
    queue = _run(["squeue", "-h", "-o", "%i|%T|%A|%a"])
    if queue.returncode == 0:
        for line in queue.stdout.splitlines():
            jid, state, array_job, task = line.split("|")
            states[jid] = state
            if task not in ("N/A", "") and "[" not in task:
                states[f"{array_job}_{task}"] = state
    missing = [j for j in job_ids if j not in states]
    if missing:
        states.update(_finished_states(missing))
    return states


def _finished_states(job_ids: list[str]) -> dict[str, str]:
    """From the accounting database (plain sacct), then the job-completion file (`sacct -c`) for the rest
    (no slurmdbd, or jobs that ended before it ran)."""
    states: dict[str, str] = {}
    for source in ([], ["-c"]):
        missing = [j for j in job_ids if j not in states]
        if not missing:
            break
        out = _run(["sacct", *source, "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)])
        if out.returncode != 0 or "accounting storage is disabled" in out.stdout + out.stderr:
            continue
        for line in out.stdout.splitlines():
            jid, state = line.split("|")[:2]
            states[jid] = state.split()[0]  # 'CANCELLED by 0' -> 'CANCELLED'
    return states
