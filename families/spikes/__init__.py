"""Calcium spike inference: CASCADE-like CNNs and the STM baseline, trained on ground truth, scored at 25 Hz."""

from __future__ import annotations

from vislab.families.spikes import crossval, infer
from vislab.families.spikes.importers import cascade, spikefinder
from vislab.families.spikes.schema import SpikesConfig, check_spikes
from vislab.models.family import Family, Runtime


def _runtime() -> Runtime:
    from vislab.families.spikes import module as m  # torch + Lightning: only when a run or export is built

    return Runtime(datamodule=m.datamodule, module=m.module, model_spec=m.model_spec, export_info=m.export_info,
                   example_input=m.example_input,
                   test_report=m.SpikeModule.test_report)

FAMILY = Family(name="spikes", description="calcium spike inference (CASCADE-like CNN, STM baseline) on ground truth",
                schema=SpikesConfig, check=check_spikes, monitor="val/corr", monitor_mode="max", runtime=_runtime,
                importers=(cascade.IMPORTER, spikefinder.IMPORTER),
                verbs={"infer": infer.cmd_infer, "crossval": crossval.cmd_crossval})
