"""vislab: one entry point, one verb per job.

    vislab demo                                   # digits -> shards -> 2-process DDP fit -> test -> export
    vislab shard SRC --out DIR [--format NAME]    # write WebDataset shards (+ manifest) per split
    vislab shard verify DIR                       # check hashes and counts
    vislab config show CONFIG [key=value ...]     # the resolved, validated config (CONFIG: a path or a
                                                  #   shipped name such as classify/digits)
    vislab config keys [FAMILY]                   # every key with its type, default and meaning
    vislab fit CONFIG [key=value ...]             # train, test the best checkpoint, print the run dir
    vislab fit RUN_DIR [key=value ...]            # resume a run (same run dir, same wandb run)
    vislab validate|test CONFIG ckpt=PATH         # metrics as one JSON object on stdout
    vislab validate|test RUN_DIR [key=value ...]  # ... of the run's best checkpoint, with its config
    vislab export RUN_DIR --out DIR               # safetensors + model.json, verified
                  [--format onnx,torchscript,state_dict] [--backbone-only [--with-head]] [--wandb]
    vislab submit CONFIG [key=value ...] [--nodes N --gpus-per-node G --time T ...] [--sweep S] [--dry-run]
    vislab runs [RUNS_ROOT]                       # runs with Slurm state, step, metric, best checkpoint
    vislab models [PATTERN]                       # architectures by name (vislab's, torchvision's, timm/...)
    vislab infer MODEL TRACES --frame-rate F --out spikes.npy   # spike rates of (num_neurons, T) dF/F
    vislab crossval CONFIG [key=value ...]        # leave-one-dataset-out over the calcium datasets
    vislab simulate v1 OUT [--sessions 2 ...]     # model V1 neurons with known RFs, in the Sinz static layout
    vislab --version

Three ways to run a config:
    one CPU process:       vislab fit configs/classify/digits.yaml trainer.devices=1
    two processes (gloo):  vislab fit configs/classify/digits.yaml trainer.devices=2 trainer.accelerator=cpu
    a Slurm job:           vislab submit configs/classify/resnet50_imagenet.yaml --nodes 2 --gpus-per-node 8

Exit codes: 0 ok, 1 failure during a run, 2 bad input (config, data, checkpoint) found before any work.
"""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

from vislab.core.config import RunConfig, to_yaml
from vislab.core.config_docs import describe_keys, format_keys
from vislab.core.errors import ConfigError, DiskFullError, NonFiniteLossError
from vislab.data.manifest import MANIFEST, SPLITS, ShardError, split_dirs
from vislab.data.shards import shard_lock, verify_shard_set
from vislab.models.family import Verb
from vislab.train import families
from vislab.train.config import load_config
from vislab.train.slurm.runs import main as runs
from vislab.train.slurm.submit import submit


def _parser(verb: str, doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"vislab {verb}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file (or, for fit, a run directory to resume)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.devices=2 data.batch_size=64")


def _load(config: str, overrides: list[str]):
    from vislab.train.run import load_run_config  # torch + Lightning: only to resume a run directory

    path = Path(config)
    return load_run_config(path, overrides) if path.is_dir() else load_config(path, overrides)


def cmd_fit(argv: list[str]) -> int:
    p = _parser("fit", "Train a model from a config, test its best checkpoint, print the run directory.\n"
                       "Give a run directory instead of a config to resume that run.")
    _config_args(p)
    a = p.parse_args(argv)
    cfg = _load(a.config, a.overrides)
    from vislab.train.run import fit, is_rank_zero  # torch + Lightning, after the config is known to be valid

    run_dir = fit(cfg)
    if is_rank_zero():
        print(run_dir, flush=True)
    return 0


def _cmd_eval(stage: str) -> Verb:
    def cmd(argv: list[str]) -> int:
        p = _parser(stage, f"Evaluate a checkpoint on the {'val' if stage == 'validate' else 'test (else val)'} split; "
                           "prints the metrics as one JSON object on stdout.")
        _config_args(p)
        a = p.parse_args(argv)
        cfg = _load_eval(a.config, a.overrides)
        from vislab.train.run import evaluate, is_rank_zero  # torch + Lightning, after the config is valid

        metrics = evaluate(cfg, stage)
        if is_rank_zero():
            print(json.dumps(metrics), flush=True)
        return 0

    return cmd


def _load_eval(config: str, overrides: list[str]):
    """A config, or a run directory: its saved config with `ckpt=` its best checkpoint (unless given)."""
    path = Path(config)
    if not path.is_dir():
        return load_config(path, overrides)
    from vislab.core.checkpoints import CONFIG_FILE, best_checkpoint  # torch: only for a run directory

    if not any(o.startswith("ckpt=") for o in overrides):
        overrides = [f"ckpt={best_checkpoint(path)[0]}", *overrides]
    return load_config(path / CONFIG_FILE, overrides)


def cmd_config_keys(argv: list[str]) -> int:
    p = _parser("config keys", "Every config key with its type, default and meaning: the shared groups, or\n"
                               "with FAMILY that family's whole schema (its model: and data: groups included).")
    p.add_argument("family", nargs="?", help=f"one of {', '.join(families.FAMILIES)}")
    a = p.parse_args(argv)
    schema = families.get_family(a.family, source="command line").schema if a.family else RunConfig
    print(format_keys(describe_keys(schema)))
    if not a.family:
        print(f"# model.* and the data.* of each family: vislab config keys FAMILY ({', '.join(families.FAMILIES)})")
    return 0


def cmd_config(argv: list[str]) -> int:
    if argv[:1] == ["keys"]:
        return cmd_config_keys(argv[1:])
    p = _parser("config", "Print the resolved, validated config (`vislab config show CONFIG [key=value ...]`).\n"
                          "`vislab config keys [FAMILY]` lists every key with its type, default and meaning.")
    p.add_argument("action", choices=["show"])
    _config_args(p)
    a = p.parse_args(argv)
    cfg = _load(a.config, a.overrides)
    print(to_yaml(cfg), end="")
    print("# derived: " + json.dumps(cfg.derived()))
    return 0


def cmd_shard(argv: list[str]) -> int:
    if argv[:1] == ["verify"]:
        return cmd_shard_verify(argv[1:])
    importers = families.importers()
    p = _parser("shard", "Write WebDataset shards and a manifest per split from a source folder.\n"
                         "Formats: " + "; ".join(f"{k}: {v.help}" for k, v in importers.items())
                         + "\nAlso: `vislab shard verify DIR` checks hashes and counts.")
    p.add_argument("src", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output data root (one folder per split)")
    p.add_argument("--format", choices=sorted(importers), help="source layout (default: detected)")
    p.add_argument("--shard-size-mb", type=float, default=256, help="target shard size (default 256 MB)")
    p.add_argument("--max-side", type=int, default=None, help="re-encode images larger than this (JPEG q90)")
    p.add_argument("--workers", type=int, default=4, help="parallel shard writers")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample order within shards")
    a, extra = p.parse_known_args(argv)
    if not a.src.exists():
        raise ConfigError([f"shard source not found: {a.src}"])
    if a.format:
        imp = importers[a.format]
    else:
        found = [i for i in importers.values() if i.detect(a.src)]
        if not found:
            raise ConfigError([f"{a.src}: layout not recognised; name it with --format ({', '.join(sorted(importers))})"])
        imp = found[0]
    options = _extra_options(extra)
    with shard_lock(a.out):  # a second `vislab shard` into the same --out fails at once, naming this one
        manifests = imp.run(a.src, a.out, shard_size_mb=a.shard_size_mb, max_side=a.max_side, workers=a.workers,
                            seed=a.seed, **options)
    for split, m in manifests.items():
        print(f"{split}: {m.num_samples} samples, {len(m.shards)} shards")
    print(a.out)
    return 0


def _extra_options(extra: list[str]) -> dict[str, str]:
    """Importer-specific `--key value` options (e.g. --frame-rate 25), passed through by name."""
    out, i = {}, 0
    while i < len(extra):
        if not extra[i].startswith("--") or i + 1 >= len(extra):
            raise ConfigError([f"unexpected argument {extra[i]!r}"])
        out[extra[i][2:].replace("-", "_")] = extra[i + 1]
        i += 2
    return out


def cmd_shard_verify(argv: list[str]) -> int:
    p = _parser("shard verify", "Check every shard's sha256 and sample count against its manifest.")
    p.add_argument("dir", type=Path, help="a data root (all splits) or one shard set")
    a = p.parse_args(argv)
    sets = {"": a.dir} if (a.dir / MANIFEST).is_file() else split_dirs(a.dir)
    if not sets:
        raise ConfigError([f"{a.dir}: no {MANIFEST} here or in train/ val/ test/"])
    # a split folder without a manifest is an empty or unfinished split: reported, not skipped
    bad = 0
    for split in SPLITS if "" not in sets else ():
        if (a.dir / split).is_dir() and split not in sets:
            print(f"FAIL {a.dir / split}: no {MANIFEST} (an empty or unfinished split; re-run `vislab shard`)", file=sys.stderr)
            bad += 1
    for d in sets.values():
        problems = verify_shard_set(d)
        bad += len(problems)
        for msg in problems:
            print(f"FAIL {msg}", file=sys.stderr)
        print(f"{d}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if bad else 0


def cmd_export(argv: list[str]) -> int:
    p = _parser("export", "Export a run's best weights + model.json in one or more formats, each verified by\n"
                          "reloading it and comparing outputs on a real batch (max abs diff in model.json).")
    p.add_argument("source", type=Path, help="run directory or .ckpt file")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--format", default="safetensors",
                   help="safetensors, state_dict, torchscript, onnx, or several comma-separated (default safetensors)")
    p.add_argument("--backbone-only", action="store_true",
                   help="write the network as a backbone without classifier (load with load_backbone(DIR))")
    p.add_argument("--with-head", action="store_true", help="with --backbone-only: keep the classifier and class names")
    p.add_argument("--wandb", action="store_true", help="log the export as a wandb artifact (offline without a server)")
    p.add_argument("--force", action="store_true", help="replace a previous export in --out (by default --out must be "
                                                         "a new or empty directory)")
    a = p.parse_args(argv)
    from vislab.train.export import export_run, parse_formats  # torch, onnx: only when exporting

    print(export_run(a.source, a.out, parse_formats(a.format), backbone_only=a.backbone_only, with_head=a.with_head,
                     wandb=a.wandb, force=a.force))
    return 0


def cmd_models(argv: list[str]) -> int:
    p = _parser("models", "List the registered architectures (vislab's own and torchvision's; timm's with a\n"
                          "pattern starting with timm/, e.g. `vislab models timm/convnext`).")
    p.add_argument("pattern", nargs="?", default="", help="substring filter")
    a = p.parse_args(argv)
    from vislab.models.registry import TIMM, list_models, timm_names  # torch + torchvision (+ timm)

    if a.pattern.startswith(TIMM):
        print("\n".join(n for n in timm_names() if n.startswith(a.pattern)))
        return 0
    print("\n".join(n for n in list_models() if a.pattern in n))
    print(f"# and timm's {len(timm_names())} architectures as timm/<name>: vislab models timm/", file=sys.stderr)
    return 0


def cmd_demo(argv: list[str]) -> int:
    from vislab.train.demo import main as demo  # torch and Lightning: kept off the CLI's start-up path

    return demo(argv)


def cmd_simulate(argv: list[str]) -> int:
    """`vislab simulate KIND OUT [...]`: data with known ground truth, in a real recording layout."""
    simulators = families.simulators()
    if not argv or argv[0] not in simulators:
        p = argparse.ArgumentParser(prog="vislab simulate", description=cmd_simulate.__doc__)
        p.add_argument("kind", choices=sorted(simulators), help="; ".join(f"{k}: {s.help}" for k, s in simulators.items()))
        p.add_argument("args", nargs=argparse.REMAINDER, help="OUT and the simulator's options (KIND --help)")
        p.parse_args(argv)  # --help exits 0; a missing or unknown kind exits 2 with argparse's message
    return simulators[argv[0]].main(argv[1:])


VERBS: dict[str, Verb] = {
    "fit": cmd_fit,
    "validate": _cmd_eval("validate"),
    "test": _cmd_eval("test"),
    "shard": cmd_shard,
    "export": cmd_export,
    "config": cmd_config,
    "models": cmd_models,
    "demo": cmd_demo,
    "submit": submit,
    "runs": runs,
    "simulate": cmd_simulate,
    **families.verbs(),  # the families' own verbs (spikes: infer, crossval)
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(f"vislab {importlib.metadata.version('vislab')}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in VERBS:
        print(__doc__)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"vislab: unknown command '{argv[0]}' (commands: {', '.join(VERBS)})", file=sys.stderr)
            return 2
        return 0
    try:
        return VERBS[argv[0]](argv[1:])
    except ConfigError as e:
        for line in e.problems:
            print(f"vislab: error: {line}", file=sys.stderr)
        return 2
    except ShardError as e:
        print(f"vislab: data error: {e}", file=sys.stderr)
        return 1
    except (NonFiniteLossError, DiskFullError) as e:
        print(f"vislab: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"vislab: error: {_disk_full(e)}", file=sys.stderr)
        return 1


def _disk_full(e: OSError) -> str:
    """One line for a full disk: the checkpoint that failed first if that is how it started (a logger that
    then failed while Lightning shut down raised this one), else the file, with the free space."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, DiskFullError):
            return str(cause)
        cause = cause.__context__
    where = Path(e.filename).parent if e.filename else Path.cwd()
    free = shutil.disk_usage(where if where.exists() else Path.cwd()).free
    return f"disk full: cannot write {e.filename or 'a file'} ({free / 2**20:.1f} MB free on its filesystem)"


if __name__ == "__main__":
    sys.exit(main())
