"""Loading a run config: the family named by `task:` supplies the schema and the checks (see
`vislab.core.config` for the shared groups and the validation itself)."""

from __future__ import annotations

import os
from typing import Any

from vislab.core import config as core
from vislab.core.config import RunConfig, to_dict, to_yaml
from vislab.train.families import get_family, schema_of

__all__ = ["load_config", "from_dict", "to_dict", "to_yaml", "RunConfig"]


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None, *, check: bool = True) -> RunConfig:
    """Read YAML + overrides, validate against the family's schema, run the common and family checks."""
    return core.load_config(path, overrides, schema_of, check=check)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig saved with a run or a checkpoint (no path checks: it already ran)."""
    return core.from_dict(data, get_family(str(data.get("task", "classify")), source="saved config").schema)
