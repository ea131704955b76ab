"""Reading checkpoints and run directories: `weights_only=True` only, clear errors, a fallback past a broken
newest checkpoint, and the one way to go from a run directory to its checkpoint."""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vislab.core.errors import ConfigError, DiskFullError

if TYPE_CHECKING:
    import torch

CKPT_KEY = "vislab"
"""The checkpoint entry holding the run's config and data facts (written by every VislabModule)."""
CONFIG_FILE = "config.yaml"
"""The config that ran, in every run directory."""
SUMMARY_FILE = "summary.json"
"""Test metrics and the best checkpoint, written when a run finishes."""


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The checkpoint dict; a missing, truncated or foreign file is a ConfigError naming it."""
    import torch  # slow import, kept off the CLI's start-up path

    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"checkpoint not found: {p}"])
    if not zipfile.is_zipfile(p):  # every torch.save since 1.6 is a zip archive; anything else is not ours
        raise ConfigError([f"{p}: not a checkpoint (not a PyTorch zip archive; {p.stat().st_size} bytes)"])
    try:
        ck = torch.load(p, map_location=map_location, weights_only=True, mmap=True)
    except Exception as e:  # pickle, zip and torch errors all mean "unusable file"
        raise ConfigError([f"{p}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})"]) from e
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise ConfigError([f"{p}: not a Lightning checkpoint (no state_dict)"])
    return ck


def save_atomic(path: str | Path, data: bytes | memoryview) -> None:
    """Write a file so that readers see the old one or the new one, never part of one: a temp file beside the
    target (same filesystem: the rename is atomic), fsync, rename, fsync of the directory. A full disk raises
    DiskFullError naming the file and the free space; the old file is untouched and the temp file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a writer that was killed (kill -9)
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # not *.ckpt: never taken for a checkpoint
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(f"disk full: cannot write {path} ({len(data) / 2**20:.1f} MB; {free / 2**20:.1f} MB "
                                f"free on its filesystem); nothing was overwritten") from e
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


def is_intact(path: Path) -> bool:
    """A torch checkpoint is a zip archive: a truncated or corrupted one fails its CRC check."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def newest_good_checkpoint(candidates: list[Path]) -> Path | None:
    """The first intact checkpoint of `candidates` (newest first), warning about each broken one skipped."""
    broken: list[Path] = []
    for p in candidates:
        if is_intact(p):
            if broken:
                warnings.warn(f"checkpoint {broken[0]} is truncated or corrupt; resuming from {p} instead", stacklevel=2)
            return p
        broken.append(p)
    if broken:
        warnings.warn(f"no intact checkpoint: {', '.join(map(str, broken))} are all broken; starting fresh", stacklevel=2)
    return None


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """Checkpoints a run could resume from, newest first (hpc = written at a Slurm signal)."""
    found = list(run_dir.glob("hpc_ckpt_*.ckpt")) + list((run_dir / "checkpoints").glob("*.ckpt"))
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest intact checkpoint of a run directory (None if it has none)."""
    return newest_good_checkpoint(checkpoint_candidates(run_dir))


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A run's summary.json ({} while the run has not finished)."""
    path = run_dir / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def best_checkpoint(source: Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint, run summary) of a .ckpt file or a run directory: the best checkpoint its summary names,
    else (a run still going, or stopped) its newest intact one."""
    if source.is_file():
        return source, {}
    if not source.is_dir():
        raise ConfigError([f"not a run directory or checkpoint: {source}"])
    summary = read_summary(source)
    best = summary.get("best_checkpoint")
    if best and Path(best).is_file():
        return Path(best), summary
    newest = resume_checkpoint(source)
    if newest is None:
        raise ConfigError([f"{source}: no checkpoint in {source / 'checkpoints'}"])
    return newest, summary


def model_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bare network's tensors from a LightningModule state_dict (`model.` prefix)."""
    return {k[len("model."):]: v.contiguous() for k, v in state_dict.items() if k.startswith("model.")}
