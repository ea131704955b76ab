"""`<run_dir>/heartbeat.json`: how `vislab runs` tells a running run from a dead, failed or preempted one.

Light (no torch): `vislab runs` reads it. Rank 0 rewrites it (`heartbeat_callback.Heartbeat`) (atomically) every `logger.heartbeat_s` seconds while training, validating or testing,
at every checkpoint, and once more when the process stops: with `status` "failed" and the error on an
exception, "preempted" when it stopped at a Slurm signal after its checkpoint (exit code 3), "stopped"
when training ended. `summary.json` marks a finished run. A "running" heartbeat older than a few intervals
whose process is gone (same host), or older than ten minutes (another host), belonged to a process that died
without a word (SIGKILL, out of memory, a lost node): that run is "failed" too.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from vislab.core.checkpoints import SUMMARY_FILE
from vislab.data.manifest import atomic_write_text

HEARTBEAT_FILE = "heartbeat.json"
STALE_AFTER_S = 600.0
"""A heartbeat from another host is taken for dead after this long (its pid cannot be checked from here)."""


def write_heartbeat(run_dir: Path, beat: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / HEARTBEAT_FILE, json.dumps(beat) + "\n")


def read_heartbeat(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / HEARTBEAT_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def run_status(run_dir: Path, now: float | None = None) -> tuple[str, str]:
    """(status, why): 'finished' | 'running' | 'failed' | 'preempted' | 'unknown', from the run's files."""
    now = time.time() if now is None else now
    if (run_dir / SUMMARY_FILE).is_file():
        return "finished", SUMMARY_FILE
    beat = read_heartbeat(run_dir)
    if not beat:
        return "unknown", f"no {HEARTBEAT_FILE}"
    status = beat.get("status", "running")
    if status == "failed":
        return "failed", beat.get("error", "")
    if status == "preempted":
        return "preempted", f"stopped at a signal at step {beat.get('step')} (exit {beat.get('exit_code')})"
    age = now - float(beat.get("time", 0))
    every = float(beat.get("every_s", 30.0))
    same_host = beat.get("host") == socket.gethostname()
    if same_host and age > 2 * every + 5 and not _alive(int(beat.get("pid", -1))):
        return "failed", f"process {beat.get('pid')} is gone (no heartbeat for {age:.0f} s)"
    if not same_host and age > max(STALE_AFTER_S, 4 * every):
        return "failed", f"no heartbeat from {beat.get('host')} for {age / 60:.0f} min"
    return "running", f"heartbeat {age:.0f} s ago"


def wall_time(run_dir: Path, summary: dict[str, Any], running: bool, now: float | None = None) -> float | None:
    """Seconds: the finished run's own count, else from the first start to the last heartbeat (now if running)."""
    if summary.get("wall_time_s") is not None:
        return float(summary["wall_time_s"])
    beat = read_heartbeat(run_dir)
    if not beat:
        return None
    end = (time.time() if now is None else now) if running else float(beat["time"])
    return max(0.0, end - float(beat.get("first_start", beat.get("start", end))))
