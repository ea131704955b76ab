"""The contract between `train/` and a model family: one typed object per family, checked by mypy.

It lives beside the shared LightningModule base (`models/base.py`) so that it can name the types a family
returns (`ShardDataModule`, `VislabModule`) precisely; a family imports it, `train/` consumes it.

`train/` calls nothing of a family but what `Family` and `Runtime` declare, and finds families in one
explicit list (`vislab.train.families.FAMILIES`). A family's schema, config checks, importers and verbs are
light (no torch); everything that needs torch or Lightning sits behind `Family.runtime()`, called only when
a run, an export or an evaluation is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from vislab.core.config import RunConfig
from vislab.data.importers import Importer

if TYPE_CHECKING:  # annotations only: importing torch/Lightning here would slow every CLI start
    import torch
    from torch import nn

    from vislab.data.modules import ShardDataModule
    from vislab.models.base import VislabModule

Verb = Callable[[list[str]], int]
"""A CLI verb: argv after the verb -> exit code."""
Check = Callable[[Any, str], list[str]]
"""(validated config, source file) -> one line per problem."""
Builder = Callable[..., "nn.Module"]
"""Rebuilds a bare network from JSON-able keyword arguments (the `spec` stored in model.json)."""


@dataclass(frozen=True)
class Simulator:
    """`vislab simulate KIND OUT [...]`: data with known ground truth, in a real recording layout."""

    main: Verb
    help: str


def no_test_report(module: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Runtime:
    """What a family builds (imports torch and Lightning)."""

    datamodule: Callable[[Any], ShardDataModule]
    """config -> the family's DataModule; its `.meta` holds facts from the training manifest."""
    module: Callable[[Any, dict[str, Any]], VislabModule]
    """(config, meta) -> the LightningModule (a `VislabModule`) whose `.model` is the exported network."""
    model_spec: Callable[[Any, dict[str, Any]], dict[str, Any]]
    """(config, meta) -> {'builder': stable name, 'kwargs': {...}}: how to rebuild the bare network."""
    export_info: Callable[[Any, dict[str, Any]], dict[str, Any]]
    """(config, meta) -> what model.json records for consumers (normalisation, input size, names, ...)."""
    example_input: Callable[[Any, dict[str, Any], int], torch.Tensor]
    """(config, export info, batch size) -> a real input batch (first eval samples) for verifying exports."""
    builders: Mapping[str, Builder] = field(default_factory=dict)
    """Stable builder names (stored in model.json) -> functions; never renamed once exports exist."""
    test_report: Callable[[Any], dict[str, Any]] = no_test_report
    """module -> family detail of the last test (per neuron, session, dataset); called on every rank."""


@dataclass(frozen=True)
class Family:
    name: str
    """The `task:` value that selects this family."""
    description: str
    schema: type[RunConfig]
    """The typed config: a RunConfig subclass with the family's `model:` and `data:` groups."""
    check: Check
    """Checks beyond types (paths, architecture names, data facts); run before any work."""
    monitor: str
    """Default metric selecting the best checkpoint."""
    monitor_mode: Literal["min", "max"]
    runtime: Callable[[], Runtime]
    importers: Sequence[Importer] = ()
    verbs: Mapping[str, Verb] = field(default_factory=dict)
    """Extra `vislab VERB` commands (spikes: infer, crossval)."""
    simulators: Mapping[str, Simulator] = field(default_factory=dict)
