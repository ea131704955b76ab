"""Saliency: a DeepGaze-II-style fixation density from frozen multi-layer backbone features."""

from __future__ import annotations

from vislab.families.saliency.importers.fixations import CSV_IMPORTER, OSIE_IMPORTER
from vislab.families.saliency.schema import SaliencyConfig, check_saliency
from vislab.models.family import Family, Runtime


def _runtime() -> Runtime:
    from vislab.families.saliency import module as m  # torch + Lightning: only when a run or export is built

    return Runtime(datamodule=m.datamodule, module=m.module, model_spec=m.model_spec, export_info=m.export_info,
                   example_input=m.example_input)

FAMILY = Family(name="saliency", description="DeepGaze-II-style fixation density from frozen multi-layer backbone features",
                schema=SaliencyConfig, check=check_saliency, monitor="val/ig", monitor_mode="max", runtime=_runtime,
                importers=(OSIE_IMPORTER, CSV_IMPORTER))
