"""Transfer learning: a linear probe or fine-tuning of a pretrained backbone on a new label set."""

from __future__ import annotations

from vislab.families.transfer.schema import TransferConfig, check_transfer
from vislab.models.family import Family, Runtime


def _runtime() -> Runtime:
    from vislab.families.transfer import module as m  # torch + Lightning: only when a run or export is built

    return Runtime(datamodule=m.datamodule, module=m.module, model_spec=m.model_spec, export_info=m.export_info,
                   example_input=m.example_input)

FAMILY = Family(name="transfer", description="linear probe or fine-tuning of a pretrained backbone on a new label set",
                schema=TransferConfig, check=check_transfer, monitor="val/acc1", monitor_mode="max", runtime=_runtime)
