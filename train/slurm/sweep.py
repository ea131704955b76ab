"""Sweep files: a grid and/or a list of config overrides, expanded into the runs of one Slurm job array.

    # sweep.yaml
    grid:                     # every combination (cartesian product, in this order)
      optim.lr: [0.001, 0.004]
      model.name: [tiny_cnn, small_cnn]
    list:                     # explicit runs; combined with every grid point
      - {seed: 0}
      - {seed: 1, data.batch_size: 128}
    max_parallel: 4           # optional: at most 4 array tasks at once (--array=0-7%4)
    group: lr-vs-width        # optional wandb group (default: <experiment>-<sweep id>)

`vislab submit CONFIG --sweep sweep.yaml` validates every run's config before anything is submitted.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vislab.core.errors import ConfigError

SWEEP_KEYS = ("grid", "list", "max_parallel", "group")
_PLAIN = re.compile(r"[A-Za-z_][\w.\-/]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "none", "~"}


@dataclass
class Sweep:
    runs: list[dict[str, Any]]
    """One mapping of dotted key -> value per array element."""
    max_parallel: int | None
    group: str | None
    source: str

    def overrides(self, index: int) -> list[str]:
        return [f"{k}={format_value(v)}" for k, v in self.runs[index].items()]

    def describe(self, index: int) -> str:
        return " ".join(self.overrides(index))


def format_value(value: Any) -> str:
    """A value as the right-hand side of a key=value override (YAML flow; JSON is valid YAML)."""
    if isinstance(value, str) and _PLAIN.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep file; every problem is reported at once as ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"sweep file not found: {path}"])
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as e:  # yaml syntax errors come in several types
        raise ConfigError([f"{path}: not valid YAML: {str(e).splitlines()[0]}"]) from e
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: expected a mapping with 'grid' and/or 'list'"])
    problems = [f"{path}: unknown key '{k!s}' (valid: {', '.join(SWEEP_KEYS)})" for k in raw if k not in SWEEP_KEYS]
    grid = raw.get("grid") or {}
    listed = raw.get("list") or []
    if not isinstance(grid, dict):
        problems.append(f"{path}: 'grid' must map config keys to lists of values")
        grid = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            problems.append(f"{path}: grid key '{key}' needs a non-empty list of values, got {values!r}")
    if not isinstance(listed, list) or not all(isinstance(x, dict) for x in listed):
        problems.append(f"{path}: 'list' must be a list of mappings (one run's overrides each)")
        listed = []
    for i, item in enumerate(listed):
        for key in set(item) & set(grid):
            problems.append(f"{path}: list entry {i} sets '{key}', which the grid also varies")
    max_parallel = raw.get("max_parallel")
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        problems.append(f"{path}: 'max_parallel' must be a positive integer, got {max_parallel!r}")
    if problems:
        raise ConfigError(problems)
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    runs = [{**item, **point} for item in (listed or [{}]) for point in points]
    if runs == [{}]:
        raise ConfigError([f"{path}: defines no runs (give 'grid' and/or 'list')"])
    return Sweep(runs=runs, max_parallel=max_parallel, group=raw.get("group"), source=str(path))


def array_spec(count: int, max_parallel: int | None) -> str:
    """Slurm's --array value: '0-<count-1>' plus '%<max_parallel>' to limit concurrent tasks."""
    spec = f"0-{count - 1}" if count > 1 else "0"
    return spec + (f"%{max_parallel}" if max_parallel else "")
