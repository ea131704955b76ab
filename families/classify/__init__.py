"""Image classification with any registered architecture (torchvision's or vislab's own) on image shards."""

from __future__ import annotations

from vislab.families.classify.schema import ClassifyConfig, check
from vislab.models.family import Family, Runtime


def _runtime() -> Runtime:
    from vislab.families.classify import module as m  # torch + Lightning: only when a run or export is built

    return Runtime(datamodule=m.datamodule, module=m.module, model_spec=m.model_spec, export_info=m.export_info,
                   example_input=m.example_input)

FAMILY = Family(name="classify", description="image classification with any torchvision or vislab architecture",
                schema=ClassifyConfig, check=check, monitor="val/acc1", monitor_mode="max", runtime=_runtime)
