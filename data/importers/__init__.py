"""Importers: turn a source layout into shard sets. `vislab shard SRC --out DIR [--format NAME]`.

Each importer registers a `detect(src) -> bool` and a `run(src, out, options) -> dict[split, Manifest]`;
the CLI picks the first that detects the source unless `--format` names one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Importer:
    name: str
    detect: Callable[[Path], bool]
    run: Callable[..., dict[str, Any]]
    help: str


IMPORTERS: dict[str, Importer] = {}


def register_importer(imp: Importer) -> Importer:
    if imp.name in IMPORTERS:
        raise ValueError(f"importer '{imp.name}' registered twice")
    IMPORTERS[imp.name] = imp
    return imp


def load_importers() -> dict[str, Importer]:
    """Import the modules that register importers (explicit list: no plugin magic)."""
    from vislab.data.importers import (  # noqa: F401  (calcium ground truth)  # noqa: F401  (V1 recordings)
        cascade,
        fixations,  # noqa: F401  (eye fixations: OSIE, CSV)
        imagefolder,  # noqa: F401
        neural_arrays,
        spikefinder,
        static_v1,
    )

    return IMPORTERS
