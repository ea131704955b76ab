"""Robustness evaluation of trained classifiers: Geirhos et al.'s image degradations with the human observers
beside the model, and minimal adversarial perturbations (Foolbox). Evaluation only: a verb, no training.

    vislab robustness MODEL --data ROOT [--suite geirhos] [--degradations ...] [--attacks l2,linf]
                            [--max-images N] [--out DIR]

Modules: `degradations` (the papers' image manipulations, batched), `conditions` (names, levels, ranges),
`humans` (16-class mapping, decision, human accuracies), `classifier`, `dataset`, `evaluate`, `attacks`,
`figures`, `run`, `cli`, `slurm` (the job script of `vislab submit robustness`).
"""

from __future__ import annotations

from typing import Any

from vislab.core.config import RunConfig
from vislab.core.errors import ConfigError
from vislab.models.family import Family, Runtime


def robustness(argv: list[str]) -> int:
    from vislab.families.robustness.cli import main  # torch, torchvision, matplotlib: only when the verb runs

    return main(argv)


def _check(cfg: Any, source: str) -> list[str]:
    return [f"{source}: task 'robustness' evaluates a trained model and has no training run; "
            "use `vislab robustness MODEL --data ROOT`"]


def _no_training(*args: Any) -> Any:
    raise ConfigError(["task 'robustness' has no training runtime; use `vislab robustness MODEL --data ROOT`"])


def _runtime() -> Runtime:
    """Nothing to build or export (`load_all_builders` calls this for every family: it must not raise)."""
    return Runtime(datamodule=_no_training, module=_no_training, model_spec=_no_training,
                   export_info=_no_training, example_input=_no_training)


VERBS = {"robustness": robustness}
FAMILY = Family(name="robustness", description="degradation psychometrics beside human observers, minimal "
                "adversarial perturbations", schema=RunConfig, check=_check, monitor="", monitor_mode="max",
                runtime=_runtime, verbs=VERBS)
