"""Importers of generic layouts (ImageFolder trees) and the importer table of `vislab shard`.

Family-specific layouts (CASCADE, OSIE, Sinz-lab V1 sessions, ...) live in their family's `importers/` and
reach the CLI through `Family.importers`; `importer_table` puts them in one table, generic layouts last
(an ImageFolder test matches almost any tree of images).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Importer:
    """A source layout -> shard sets (`vislab shard SRC --out DIR [--format NAME]`)."""

    name: str
    detect: Callable[[Path], bool]
    """Does `src` look like this layout? (cheap: file names, not contents)"""
    run: Callable[..., dict[str, Any]]
    """(src, out, *, shard_size_mb, max_side, workers, seed, **options) -> {split: Manifest}"""
    help: str


def importer_table(*groups: Iterable[Importer]) -> dict[str, Importer]:
    """{name: importer} in detection order; a name given twice is a programming error."""
    table: dict[str, Importer] = {}
    for imp in (i for g in groups for i in g):
        if imp.name in table:
            raise ValueError(f"importer '{imp.name}' registered twice")
        table[imp.name] = imp
    return table
