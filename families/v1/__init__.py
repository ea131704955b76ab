"""Mouse-V1 response predictors: one convolutional core shared by all neurons and sessions, one readout per
session (what x where), Poisson loss; data from Sinz-lab static recordings or the simulator."""

from __future__ import annotations

from vislab.families.v1 import simulate
from vislab.families.v1.importers import neural_arrays, static_v1
from vislab.families.v1.schema import V1Config, check
from vislab.models.family import Family, Runtime, Simulator


def _runtime() -> Runtime:
    from vislab.families.v1 import module as m  # torch + Lightning: only when a run or export is built

    return Runtime(datamodule=m.datamodule, module=m.module, model_spec=m.model_spec, export_info=m.export_info,
                   example_input=m.example_input,
                   test_report=m.V1Module.test_report)

FAMILY = Family(name="v1", description="mouse-V1 response predictors: shared core, per-session readouts",
                schema=V1Config, check=check, monitor="val/corr", monitor_mode="max", runtime=_runtime,
                importers=(neural_arrays.IMPORTER, static_v1.IMPORTER),
                simulators={"v1": Simulator(simulate.main, "model V1 neurons with known receptive fields (Sinz static layout)")})
