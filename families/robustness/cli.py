"""`vislab robustness MODEL --data ROOT`: Geirhos et al.'s degradations beside human observers, and
minimal adversarial perturbations (Foolbox), for any classifier.

    one CPU process:   vislab robustness efficientnet_lite0 --data shards/imagenette --max-images 200
    two processes:     torchrun --standalone --nproc-per-node 2 -m vislab.train.cli robustness MODEL --data ROOT
    a Slurm job:       vislab submit robustness MODEL --data ROOT --nodes 1 --gpus-per-node 4 [--dry-run]

Everything is checked before any image is read: an unknown degradation or level, a level outside the
paper's range, a model without a classification head, data whose classes do not match the model's ->
one line each, exit 2.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vislab.core.errors import ConfigError
from vislab.families.robustness.attacks import NORMS, Norm
from vislab.families.robustness.conditions import SUITES, parse_degradations

if TYPE_CHECKING:
    from vislab.data.manifest import Manifest
    from vislab.families.robustness.classifier import Classifier
    from vislab.families.robustness.dataset import Targets
    from vislab.families.robustness.run import Settings

EPILOG = """degradations (levels as in the papers; NAME:L1/L2 for a subset):
  colour (colour/greyscale), contrast (100..1 %), uniform-noise (0..0.9), low-pass (0..40 px),
  high-pass (inf..0.4 px), phase-scrambling (0..180 deg), power-equalisation (original/equalised),
  rotation (0/90/180/270), false-colour (true/opponent), salt-and-pepper (0..0.95; no human data).
  Eidolon distortions are not included: their toolbox is not installable from PyPI."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vislab robustness", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="export directory or pretrained backbone name (efficientnet_lite0, resnet50, ...)")
    p.add_argument("--data", required=True, type=Path, help="shard set (or a data root: its val/, else test/)")
    p.add_argument("--suite", default="geirhos", choices=sorted(SUITES), help="all degradations of a suite")
    p.add_argument("--degradations", help="comma list overriding the suite, e.g. contrast,uniform-noise:0.35/0.6")
    p.add_argument("--attacks", default="l2,linf", help="norms of the minimal perturbations, or 'none'")
    p.add_argument("--max-images", type=int, help="the first N images of the shard set (default: all)")
    p.add_argument("--attack-images", type=int, default=64, help="images attacked with FMN (default 64)")
    p.add_argument("--decision-images", type=int, default=8, help="of these, attacked with HopSkipJump (default 8)")
    p.add_argument("--fmn-steps", type=int, default=100)
    p.add_argument("--hsj-steps", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="seed of the random degradations")
    p.add_argument("--aggregation", choices=["mean", "max"], default="mean",
                   help="16-class decision: mean (model-vs-human) or max (2018 code) of each category's probabilities")
    p.add_argument("--out", type=Path, help="run directory (default runs/robustness/<time>-<model>); rerun to resume")
    p.add_argument("--wandb", action="store_true", help="also log curves and numbers to wandb")
    return p


def parse_norms(text: str) -> tuple[tuple[Norm, ...], list[str]]:
    if text.strip().lower() == "none":
        return (), []
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in NORMS]
    problems = [f"--attacks: unknown norm '{t}' (valid: {', '.join(NORMS)} or none)" for t in bad]
    return tuple(dict.fromkeys(t for t in items if t in NORMS)), problems  # type: ignore[misc]


def prepare(argv: list[str]) -> tuple[Settings, Classifier, Manifest, Path, Targets]:
    """Parse and check everything before any image is read: (Settings, Classifier, Manifest, shard set
    directory, Targets). `vislab submit robustness` calls this too, so a job is never queued to fail."""
    a = parser().parse_args(argv)
    from vislab.families.robustness import run as R  # torch and the model code: after argparse's --help
    from vislab.families.robustness.classifier import (
        load_classifier,  # torch and Lightning: kept off the CLI's start-up path
    )
    from vislab.families.robustness.dataset import (  # torch and Lightning: kept off the CLI's start-up path
        data_classes,
        shard_set,
        targets,
    )

    plan, problems = parse_degradations(a.degradations or ",".join(SUITES[a.suite]))
    norms, norm_problems = parse_norms(a.attacks)
    problems += norm_problems
    for flag in ("max_images", "attack_images", "decision_images", "fmn_steps", "hsj_steps", "batch_size"):
        value = getattr(a, flag)
        if value is not None and value < (1 if flag in ("max_images", "batch_size", "fmn_steps", "hsj_steps") else 0):
            problems.append(f"--{flag.replace('_', '-')}: {value} is not a valid count")
    directory, data_problems = shard_set(a.data)
    problems += data_problems
    if problems:
        raise ConfigError(problems)
    manifest, classes = data_classes(directory)
    clf = load_classifier(a.model)
    tgt = targets(classes, clf, str(a.data))
    out = a.out or Path("runs") / "robustness" / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(a.model).name}"
    settings = R.Settings(model=a.model, data=str(a.data), out=str(out), plan=plan, norms=norms,
                          max_images=a.max_images, attack_images=a.attack_images, decision_images=a.decision_images,
                          fmn_steps=a.fmn_steps, hsj_steps=a.hsj_steps, batch_size=a.batch_size, seed=a.seed,
                          aggregation=a.aggregation, wandb=a.wandb)
    return settings, clf, manifest, directory, tgt


def main(argv: list[str]) -> int:
    from vislab.families.robustness import run as R  # torch and Lightning: kept off the CLI's start-up path

    settings, clf, manifest, directory, tgt = prepare(argv)
    R.run(settings, clf, manifest, directory, tgt)
    if R.global_rank() == 0:
        print(settings.out, flush=True)
    return 0
