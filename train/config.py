"""Loading a run config: the family named by `task:` supplies the schema and the checks (see
`vislab.core.config` for the shared groups and the validation itself)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from vislab.core import config as core
from vislab.core.config import RunConfig, to_dict, to_yaml
from vislab.data.manifest import Manifest, ShardError
from vislab.train.families import get_family, schema_of

__all__ = ["load_config", "from_dict", "to_dict", "to_yaml", "RunConfig"]


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None, *, check: bool = True) -> RunConfig:
    """Read YAML + overrides, validate against the family's schema, run the common and family checks."""
    cfg = core.load_config(path, overrides, schema_of, check=check)
    if check:
        warn_batch_larger_than_data(cfg)
    return cfg


def warn_batch_larger_than_data(cfg: RunConfig) -> None:
    """A global batch larger than the training set trains one step per epoch on repeated samples: say so."""
    train = Path(str(cfg.data.root)) / "train"
    try:
        n = Manifest.load(train).num_samples
    except ShardError:  # no shard set at data.root (families without one); the family checks judge the root
        return
    n = min(n, cfg.data.limit_train_samples or n)
    if cfg.data.batch_size > n:
        warnings.warn(f"'data.batch_size'={cfg.data.batch_size} (global) is larger than the {n} training samples in "
                      f"{train}: every epoch is one optimizer step over resampled (repeated) samples", stacklevel=2)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig saved with a run or a checkpoint (no path checks: it already ran)."""
    return core.from_dict(data, get_family(str(data.get("task", "classify")), source="saved config").schema)
