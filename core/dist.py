"""Which process am I, before and after Lightning sets up DDP (torchrun, srun or Lightning's own launcher)."""

from __future__ import annotations

import os


def global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        # SLURM_PROCID alone (without SLURM_NTASKS) is an interactive allocation, not a task of a job step
        if var in os.environ and (var != "SLURM_PROCID" or "SLURM_NTASKS" in os.environ):
            return int(os.environ[var])
    return 0


def is_rank_zero() -> bool:
    return global_rank() == 0
