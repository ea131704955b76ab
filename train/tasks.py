"""The model families, by `task:` name. Each family is a schema (typed `model:` and `data:`), config checks,
its default monitored metric, and an implementation module providing

    datamodule(cfg) -> LightningDataModule
    module(cfg, meta) -> VislabModule          (meta: facts from the training manifest)
    bare_model(cfg, meta) -> nn.Module          (the exported network, rebuilt without Lightning)

Schemas and checks are imported eagerly (no torch); implementations only when a run is built.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from vislab.train.config import ConfigError, DataConfig, RunConfig

Check = Callable[[RunConfig, str], list[str]]


@dataclass(frozen=True)
class Task:
    name: str
    schema: type
    impl: str
    check: Check
    monitor: str
    monitor_mode: str
    description: str

    def implementation(self) -> ModuleType:
        return importlib.import_module(self.impl)


TASKS: dict[str, Task] = {}


def run_schema(name: str, model: type, data: type = DataConfig) -> type:
    """A RunConfig subclass whose `model` and `data` groups are the family's dataclasses."""
    return dataclasses.make_dataclass(
        f"{name.capitalize()}RunConfig",
        [("data", data, field(default_factory=data)), ("model", model, field(default_factory=model))],
        bases=(RunConfig,),
    )


def register_task(name: str, *, impl: str, check: Check, monitor: str, monitor_mode: str, description: str,
                  schema: type | None = None, model: type | None = None, data: type = DataConfig) -> Task:
    """Register a family. Give `schema` (a typed RunConfig subclass, best for type checking) or
    `model` (+ `data`) dataclasses to have one made."""
    if name in TASKS:
        raise ValueError(f"task '{name}' registered twice")
    if schema is None:
        if model is None:
            raise ValueError(f"task '{name}': give schema= or model=")
        schema = run_schema(name, model, data)
    TASKS[name] = Task(name, schema, impl, check, monitor, monitor_mode, description)
    return TASKS[name]


def get_task(name: str, source: str = "") -> Task:
    _register_all()
    if name not in TASKS:
        import difflib

        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(sorted(TASKS))})"
        raise ConfigError([f"{source}: unknown task '{name}'{hint}"])
    return TASKS[name]


def monitor_of(cfg: RunConfig) -> tuple[str, str]:
    task = get_task(cfg.task)
    metric = cfg.trainer.monitor or task.monitor
    mode = cfg.trainer.monitor_mode if cfg.trainer.monitor_mode != "auto" else (
        task.monitor_mode if metric == task.monitor else ("min" if "loss" in metric else "max"))
    return metric, mode


# ------------------------------------------------------------------------------------------ families
def _check_classify(cfg: Any, source: str) -> list[str]:
    from vislab.data.manifest import Manifest, check_data_root
    from vislab.models.registry import unknown_model_message

    problems = []
    msg = unknown_model_message(cfg.model.name)
    if msg:
        problems.append(f"{source}: 'model.name': {msg}")
    root_problems = check_data_root(cfg.data.root, source)
    problems += root_problems
    if not root_problems:
        meta = Manifest.load(f"{cfg.data.root}/train").meta
        n = meta.get("num_classes")
        if n is not None and n > cfg.model.num_classes:
            problems.append(f"{source}: 'model.num_classes'={cfg.model.num_classes} but the shards in {cfg.data.root} have {n} classes")
    if len(cfg.data.mean) != len(cfg.data.std):
        problems.append(f"{source}: 'data.mean' and 'data.std' must have the same length")
    return problems


_registered = False


def _register_all() -> None:
    """Explicit list of families (no discovery magic)."""
    global _registered
    if _registered:
        return
    _registered = True
    from vislab.train.schemas.classify import ClassifyConfig

    register_task("classify", schema=ClassifyConfig, impl="vislab.models.classifier",
                  check=_check_classify, monitor="val/acc1", monitor_mode="max",
                  description="image classification with any torchvision or vislab architecture")
    from vislab.train.schemas.spikes import SpikesConfig, check_spikes

    register_task("spikes", schema=SpikesConfig, impl="vislab.models.spike_task",
                  check=check_spikes, monitor="val/corr", monitor_mode="max",
                  description="calcium spike inference (CASCADE-like CNN, STM baseline) on ground truth")
    from vislab.train.schemas.v1 import V1Config
    from vislab.train.schemas.v1 import check as check_v1

    register_task("v1", schema=V1Config, impl="vislab.models.v1.module", check=check_v1, monitor="val/corr",
                  monitor_mode="max", description="mouse-V1 response predictors: shared core, per-session readouts")
    from vislab.train.schemas.transfer import SaliencyConfig, TransferConfig, check_saliency, check_transfer

    register_task("transfer", schema=TransferConfig, impl="vislab.models.transfer", check=check_transfer,
                  monitor="val/acc1", monitor_mode="max",
                  description="linear probe or fine-tuning of a pretrained backbone on a new label set")
    register_task("saliency", schema=SaliencyConfig, impl="vislab.models.saliency", check=check_saliency,
                  monitor="val/ig", monitor_mode="max",
                  description="DeepGaze-II-style fixation density from frozen multi-layer backbone features")
