"""The families vislab knows, in one explicit list: a new family is one folder plus one line here."""

from __future__ import annotations

import difflib

from vislab.core.config import RunConfig
from vislab.core.errors import ConfigError
from vislab.data.importers import Importer, importer_table
from vislab.data.importers.imagefolder import IMPORTER as IMAGEFOLDER
from vislab.families import classify, robustness, saliency, spikes, textures, transfer, v1
from vislab.models.family import Check, Family, Simulator, Verb

FAMILIES: dict[str, Family] = {f.name: f for f in (
    classify.FAMILY,
    transfer.FAMILY,
    saliency.FAMILY,
    v1.FAMILY,
    spikes.FAMILY,
    robustness.FAMILY,
    textures.FAMILY,
)}


def get_family(name: str, source: str = "") -> Family:
    if name not in FAMILIES:
        close = difflib.get_close_matches(name, list(FAMILIES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(sorted(FAMILIES))})"
        raise ConfigError([f"{source}: unknown task '{name}'{hint}"])
    return FAMILIES[name]


def schema_of(task: str, source: str) -> tuple[type[RunConfig], Check]:
    family = get_family(task, source)
    return family.schema, family.check


def monitor_of(cfg: RunConfig) -> tuple[str, str]:
    """The metric that selects the best checkpoint and its mode: the config's, else the family's."""
    family = get_family(cfg.task)
    metric = cfg.trainer.monitor or family.monitor
    mode = cfg.trainer.monitor_mode if cfg.trainer.monitor_mode != "auto" else (
        family.monitor_mode if metric == family.monitor else ("min" if "loss" in metric else "max"))
    return metric, mode


def importers() -> dict[str, Importer]:
    """`vislab shard`'s layouts in detection order: the families' own first, the generic ImageFolder last."""
    return importer_table(*(f.importers for f in FAMILIES.values()), [IMAGEFOLDER])


def verbs() -> dict[str, Verb]:
    out: dict[str, Verb] = {}
    for f in FAMILIES.values():
        out.update(f.verbs)
    return out


def simulators() -> dict[str, Simulator]:
    out: dict[str, Simulator] = {}
    for f in FAMILIES.values():
        out.update(f.simulators)
    return out


def load_all_builders() -> None:
    """Import every family's networks, so that their export builders are registered."""
    for f in FAMILIES.values():
        f.runtime()
