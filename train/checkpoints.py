"""Reading checkpoints safely: `weights_only=True` only, clear errors, and a fallback past a broken newest one."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

from vislab.train.config import ConfigError


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The checkpoint dict; a missing, truncated or foreign file is a ConfigError naming it."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"checkpoint not found: {p}"])
    try:
        ck = torch.load(p, map_location=map_location, weights_only=True, mmap=True)
    except Exception as e:  # pickle, zip and torch errors all mean "unusable file"
        raise ConfigError([f"{p}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})"]) from e
    if not isinstance(ck, dict) or "state_dict" not in ck:
        raise ConfigError([f"{p}: not a Lightning checkpoint (no state_dict)"])
    return ck


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
