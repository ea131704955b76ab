"""Texture synthesis and style transfer from CNN feature statistics: images are optimised, not weights.

Gatys, Ecker & Bethge 2015 (Gram-matrix textures), Gatys et al. 2016 (style transfer; colour preservation),
Gatys et al. 2017 (spatial, colour and scale control), Ustyuzhaninov et al. 2016 (random shallow multi-scale
networks, the offline default). One verb, `vislab synthesize texture|style` (see `synthesize.py`); nothing
is trained, so there is no `vislab fit` runtime.

Modules: `schema` (config), `features` (random multi-scale net, backbone layers), `losses` (Gram, content,
TV, colour), `module` (the LightningModule whose parameters are the images), `synthesize` (the verb: input
checks), `run` (targets, optimisation, outputs, tracking), `metrics` (Gram distances on another network),
`figures`.
"""

from __future__ import annotations

from typing import Any

from vislab.core.errors import ConfigError
from vislab.families.textures.schema import TexturesConfig, check_config
from vislab.families.textures.synthesize import main as synthesize
from vislab.models.family import Family, Runtime


def _no_training(*args: Any) -> Any:
    raise ConfigError(["task 'textures' trains nothing; use `vislab synthesize texture|style --config ...`"])


def _runtime() -> Runtime:
    """Nothing to build or export (`load_all_builders` calls this for every family: it must not raise)."""
    return Runtime(datamodule=_no_training, module=_no_training, model_spec=_no_training,
                   export_info=_no_training, example_input=_no_training)


FAMILY = Family(
    name="textures",
    description="texture synthesis and style transfer by optimising images (Gatys et al.; random multi-scale nets)",
    schema=TexturesConfig,
    check=check_config,
    monitor="loss",
    monitor_mode="min",
    runtime=_runtime,
    verbs={"synthesize": synthesize},
)

__all__ = ["FAMILY", "synthesize"]
