"""Importers of generic layouts (ImageFolder trees) and the importer table of `vislab shard`.

Family-specific layouts (CASCADE, OSIE, Sinz-lab V1 sessions, ...) live in their family's `importers/` and
reach the CLI through `Family.importers`; `importer_table` puts them in one table, generic layouts last
(an ImageFolder test matches almost any tree of images).
"""

from __future__ import annotations

from collections.abc import Iterable

from vislab.core.family import Importer


def importer_table(*groups: Iterable[Importer]) -> dict[str, Importer]:
    """{name: importer} in detection order; a name given twice is a programming error."""
    table: dict[str, Importer] = {}
    for imp in (i for g in groups for i in g):
        if imp.name in table:
            raise ValueError(f"importer '{imp.name}' registered twice")
        table[imp.name] = imp
    return table
