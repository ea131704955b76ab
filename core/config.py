"""Typed run configuration: the schema groups every model family shares, and loading + validation.

A run is described by one YAML file plus `key=value` overrides. `task:` in the file picks the family
(classify, v1, spikes, ...); the family's schema (a RunConfig subclass, passed in by the caller) fixes the
`model:` and `data:` groups. Everything is merged against `OmegaConf.structured(...)`, so unknown keys and wrong types fail,
and `OmegaConf.to_object` hands plain dataclasses to the rest of the code.

All problems are collected and reported at once, as `ConfigError`, before any process is spawned or any
shard opened; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException
from yaml import MarkedYAMLError

from vislab.core.errors import ConfigError


@dataclass
class DataConfig:
    """Where the shards are and how they are batched. Families extend this with their own fields."""

    root: str = "???"
    """Directory holding one shard set per split: `train/`, `val/`, optional `test/` (each with manifest.json)."""
    batch_size: int = 256
    """Global batch size per optimizer step, summed over all processes (and accumulation steps)."""
    eval_batch_size: int | None = None
    """Global batch size for validation/test; defaults to `batch_size`."""
    num_workers: int = 4
    """DataLoader worker processes per training process."""
    shuffle_buffer: int = 2000
    """Samples held in each worker's shuffle buffer during training."""
    on_error: Literal["raise", "skip"] = "raise"
    """A missing/corrupt shard is an error ('raise'), or a warning with the skipped count logged ('skip')."""
    limit_train_samples: int | None = None
    """Cut the training epoch to this many samples (debugging / tiny runs); default: the manifest's count."""


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (schedules step per optimizer step, not per epoch)."""

    name: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = 0.1
    """Peak learning rate for the global batch size `data.batch_size`."""
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    no_decay_norm_bias: bool = True
    """Exclude biases and normalisation parameters (all 1-D tensors) from weight decay."""
    scheduler: Literal["cosine", "step", "constant", "plateau"] = "cosine"
    """'plateau': multiply the LR by `plateau_factor` when the monitored metric stalls (checked per validation)."""
    warmup_epochs: float = 0.0
    """Linear warmup from `warmup_start_factor * lr`; fractions of an epoch are allowed."""
    warmup_start_factor: float = 0.01
    min_lr_factor: float = 0.0
    """Cosine decays to `min_lr_factor * lr`."""
    step_milestones: list[int] = field(default_factory=lambda: [30, 60, 80])
    """Epochs at which the step schedule multiplies the LR by `step_gamma`."""
    step_gamma: float = 0.1
    plateau_factor: float = 0.3
    plateau_patience: int = 5
    """Validations without an improvement larger than `plateau_threshold` before the LR is cut."""
    plateau_threshold: float = 1e-6
    """Absolute improvement of the monitored metric that counts (neuralpredictors' tolerance)."""


@dataclass
class TrainerConfig:
    """The Lightning Trainer. The same config runs on CPU (gloo) and GPU (NCCL)."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = 1
    """Processes per node (GPUs per node on a GPU machine)."""
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    """'auto' = DDP when more than one process, else single device."""
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "64-true", "bf16-true"] = "32-true"
    max_epochs: int = 10
    max_steps: int = -1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 50
    monitor: str | None = None
    """Metric that selects the best checkpoint (and early stopping); default: the family's main metric."""
    monitor_mode: Literal["min", "max", "auto"] = "auto"
    save_top_k: int = 1
    early_stopping_patience: int | None = None
    """Stop after this many validations without improvement of `monitor`; None = never."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the weights (e.g. 0.9998); validation and export use it."""
    channels_last: bool = False
    compile: bool = False
    """torch.compile the model (GPU clusters; adds minutes of compile time)."""
    deterministic: bool = False
    progress_bar: Literal["auto", "bar", "text", "none"] = "auto"
    """'auto' = a bar on a terminal, one text line per `log_every_n_steps` otherwise (Slurm logs)."""
    ddp_timeout_s: int = 1800
    """Collective timeout: a dead rank fails the job after this long instead of hanging it."""
    matmul_precision: Literal["highest", "high", "medium"] = "high"


@dataclass
class LogConfig:
    """Experiment tracking. wandb goes offline by itself when there is no API key or no network."""

    wandb: bool = True
    project: str = "vislab"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """'auto': online with an API key and a reachable server, else offline (said once, at the start);
    'online': an error without them (unless `fallback_offline`); WANDB_MODE=offline|disabled wins."""
    fallback_offline: bool = False
    """With mode=online: log offline (with a warning) instead of failing when there is no key or no server."""
    log_checkpoints: bool = False
    """Upload the best checkpoint as a wandb artifact at the end of the run."""
    sample_keys: bool = False
    """Append the sample keys of every training batch to `<run_dir>/sample_keys/rank<R>.txt` (audits what a
    run read, e.g. across preemptions and restarts)."""
    tensorboard: bool = True
    """Also log to TensorBoard (`<run_dir>/tensorboard/`: the same scalars and figures as wandb, no server or
    account needed): `tensorboard --logdir runs` shows every run side by side."""
    heartbeat_s: float = 30.0
    """Seconds between updates of `<run_dir>/heartbeat.json` (what `vislab runs` tells running from dead by)."""


@dataclass
class SlurmConfig:
    """Cluster resources for `vislab submit` (command-line flags override these)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    time: str = "1-00:00:00"
    """Time limit: minutes, H:M:S or D-H:M:S (quote clock times in YAML: unquoted 1:30:00 is read as 5400)."""
    cpus_per_task: int = 8
    """CPUs per task (= per device): the training process and its data.num_workers loader processes."""
    mem: str | None = None
    gpus_per_node: int | None = None
    """Must equal trainer.devices (one task per GPU; `--gpus-per-node` sets both). A job asks for
    trainer.devices GPUs per node unless trainer.accelerator is cpu."""
    max_requeues: int = 3
    """Stop requeueing after this many restarts in a row that resumed at no later global step."""
    requeue_on_failure: bool = True
    """Requeue the job when training fails (a rank died, a node failed); it resumes from its last checkpoint."""
    signal_lead_s: int = 90
    """SIGUSR1 this many seconds before the time limit: checkpoint, requeue, exit."""
    env: list[str] = field(default_factory=list)
    """Extra environment of the job as NAME=value, e.g. [NCCL_SOCKET_IFNAME=ib0, GLOO_SOCKET_IFNAME=ib0]."""
    extra_sbatch: list[str] = field(default_factory=list)
    """Additional `#SBATCH` lines, verbatim (e.g. '--exclusive')."""


@dataclass
class RunConfig:
    """Top level of every run. `model` and `data` are typed per family (its `schema`)."""

    task: str = "classify"
    experiment: str = "default"
    """Runs are written to `<runs_root>/<experiment>/<run_id>/`."""
    seed: int = 0
    runs_root: str = "runs"
    run_id: str | None = None
    """Fixed run id (Slurm submission sets it); default: a fresh time-stamped id."""
    resume: str | None = None
    """Resume from a run directory or a .ckpt file ('auto' = the newest checkpoint of `run_id`)."""
    ckpt: str | None = None
    """Checkpoint for `vislab validate` / `vislab test`."""
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LogConfig = field(default_factory=LogConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    written_as: dict[str, str] = field(default_factory=dict)
    """Set by loading, not by users: keys whose value is an interpolation (`${oc.env:TOKEN}`, `${data.root}`),
    with the text as written. The run uses the resolved values; config.yaml, checkpoints and the wandb config
    store this text instead (`to_dict`), so a secret read from the environment is never written anywhere."""

    # ----- derived values (logged with the run) -----
    @property
    def world_size(self) -> int:
        return self.trainer.devices * self.trainer.num_nodes

    def per_rank_batch_size(self) -> int:
        return self.data.batch_size // (self.world_size * self.trainer.accumulate_grad_batches)

    def per_rank_eval_batch_size(self) -> int:
        return max(1, (self.data.eval_batch_size or self.data.batch_size) // self.world_size)

    def derived(self) -> dict[str, Any]:
        return {
            "world_size": self.world_size,
            "per_rank_batch_size": self.per_rank_batch_size(),
            "per_rank_eval_batch_size": self.per_rank_eval_batch_size(),
        }


# ---------------------------------------------------------------------------------------------- loading


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """All leaf and group keys of a plain dict tree, dotted."""
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}{k}"
            out.append(key)
            out.extend(_dotted_keys(v, key + "."))
    return out


def _schema_keys(cls: type, prefix: str = "") -> list[str]:
    out: list[str] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        out.append(key)
        ftype = f.type if not isinstance(f.type, str) else None
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        sub = type(default) if dataclasses.is_dataclass(default) else ftype
        if isinstance(sub, type) and dataclasses.is_dataclass(sub):
            out.extend(_schema_keys(sub, key + "."))
    return out


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _check_leaves(schema: DictConfig, user: Any, source: str, prefix: str = "") -> list[str]:
    """Merge the user's tree into the schema one key at a time so that every bad key is reported."""
    problems: list[str] = []
    if not isinstance(user, dict):
        return problems
    valid = _dotted_keys(OmegaConf.to_container(schema, resolve=False))
    for key, value in user.items():
        full = f"{prefix}{key}"
        present = key in schema.keys()  # `in schema` is False for keys whose value is still missing
        node = schema._get_node(key) if present else None
        if not present:
            problems.append(f"{source}: unknown key '{full}'{_closest(full, [prefix + v for v in valid])}")
            continue
        if isinstance(node, DictConfig) and isinstance(value, dict) and not OmegaConf.is_missing(schema, key):
            problems.extend(_check_leaves(node, value, source, full + "."))
            continue
        try:
            OmegaConf.merge(schema, {key: value})
        except OmegaConfBaseException as e:
            msg = str(e).splitlines()[0]
            problems.append(f"{source}: bad value for '{full}': {msg}")
    return problems


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"])
    try:
        loaded = OmegaConf.load(path)
    except MarkedYAMLError as e:  # scanner and parser errors carry the position of the problem
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError([f"{path}: not valid YAML{where}: {e.problem or e.context}"]) from e
    except Exception as e:  # other yaml errors (bad encoding, ...)
        raise ConfigError([f"{path}: not valid YAML: {str(e).splitlines()[0]}"]) from e
    if not isinstance(loaded, DictConfig):
        raise ConfigError([f"{path}: expected a mapping at the top level"])
    if not loaded:
        raise ConfigError([f"{path}: the config file is empty (a config names at least 'task:' and 'data.root:')"])
    return OmegaConf.to_container(loaded, resolve=False)  # type: ignore[return-value]


def _parse_overrides(overrides: list[str]) -> dict[str, Any]:
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError([f"override '{o}' is not of the form key=value" for o in bad])
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(overrides))  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError([f"overrides: {str(e).splitlines()[0]}"]) from e


SchemaOf = Callable[[str, str], "tuple[type[RunConfig], Callable[[Any, str], list[str]]]"]
"""task name, source -> (the family's RunConfig subclass, its config checks); raises ConfigError if unknown."""


def find_config(path: str | os.PathLike[str]) -> Path:
    """A config file by path, else by the name of a shipped one ('classify/digits' or 'classify/digits.yaml':
    package data `vislab/configs/`, so names work after a plain `pip install`); else the path as given."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    shipped = importlib.resources.files("vislab").joinpath("configs", *p.with_suffix(".yaml").parts)
    return Path(str(shipped)) if shipped.is_file() else p


def task_of(path: str | os.PathLike[str], overrides: list[str] | None = None) -> str:
    """The `task:` a config file + overrides select (default classify), without validating anything else."""
    return str(_parse_overrides(overrides or []).get("task", _read_yaml(find_config(path)).get("task", "classify")))


def load_config(path: str | os.PathLike[str], overrides: list[str] | None, schema_of: SchemaOf, *,
                check: bool = True) -> RunConfig:
    """Read YAML + overrides, validate against the schema `schema_of(task)` names, return plain dataclasses.

    Raises ConfigError listing every problem (unknown keys with the closest valid name, wrong types,
    missing required values, and the family's own checks: data paths, architecture names, ...).
    """
    path = find_config(path)
    user = _read_yaml(path)
    over = _parse_overrides(overrides or [])
    schema_cls, family_check = schema_of(str(over.get("task", user.get("task", "classify"))), str(path))
    schema = OmegaConf.structured(schema_cls)

    problems = _check_leaves(schema, user, str(path)) + _check_leaves(schema, over, "command line")
    if problems:
        raise ConfigError(problems)
    merged = OmegaConf.merge(schema, user, over)
    assert isinstance(merged, DictConfig)  # a structured schema merges into a DictConfig
    written = interpolations(OmegaConf.to_container(merged, resolve=False))
    overridden = set(_dotted_keys(over))
    check_interpolations(merged, written, lambda key: "command line" if key in overridden else str(path))
    missing = sorted(k for k in OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError([f"{path}: required key '{k}' has no value (set it in the file or as {k}=...)" for k in missing])
    cfg = _to_object(merged, written, lambda key: "command line" if key in overridden else str(path))
    if check:
        problems = blame_overrides(check_common(cfg, str(path)) + family_check(cfg, str(path)), str(path), overridden)
        if problems:
            raise ConfigError(problems)
    return cfg


def interpolations(tree: Any, prefix: str = "") -> dict[str, str]:
    """{dotted key: text} of every value written as an interpolation (`${...}`) in a plain container."""
    out: dict[str, str] = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        if isinstance(v, str) and "${" in v:
            out[f"{prefix}{k}"] = v
        else:
            out.update(interpolations(v, f"{prefix}{k}."))
    return out


def check_interpolations(merged: DictConfig, written: dict[str, str], source_of: Callable[[str], str]) -> None:
    """One line per interpolation that does not resolve (unset variable, self-reference, unknown key)."""
    problems = []
    for key, text in written.items():
        try:
            OmegaConf.select(merged, key, throw_on_resolution_failure=True)
        except OmegaConfBaseException as e:
            problems.append(f"{source_of(key)}: '{key}': cannot resolve {text!r}: {_first_line(e)}")
    if problems:
        raise ConfigError(problems)


def _to_object(merged: DictConfig, written: dict[str, str], source_of: Callable[[str], str]) -> RunConfig:
    """Plain dataclasses; a value an interpolation gave the wrong type is one line naming the key."""
    try:
        cfg: RunConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or "?"
        raise ConfigError([f"{source_of(key)}: '{key}': {_first_line(e)}"]) from e
    cfg.written_as = written
    return cfg


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


_QUOTED_KEY = re.compile(r"'([A-Za-z_]\w*(?:\.\w+)+)'")


def blame_overrides(problems: list[str], path: str, overridden: set[str]) -> list[str]:
    """Lines that name a key set on the command line blame the command line, not the file."""
    out = []
    for line in problems:
        m = _QUOTED_KEY.search(line)
        if m and line.startswith(f"{path}: ") and m.group(1) in overridden:
            line = "command line: " + line[len(path) + 2:]
        out.append(line)
    return out


def check_common(cfg: RunConfig, source: str) -> list[str]:
    """Checks every family shares: sizes that must divide, values that must be positive."""
    p: list[str] = []
    t = cfg.trainer
    if t.devices < 1 or t.num_nodes < 1:
        p.append(f"{source}: 'trainer.devices' and 'trainer.num_nodes' must be >= 1")
        return p
    denom = cfg.world_size * t.accumulate_grad_batches
    if cfg.data.batch_size < denom or cfg.data.batch_size % denom:
        p.append(
            f"{source}: 'data.batch_size'={cfg.data.batch_size} must be a multiple of devices x num_nodes x "
            f"accumulate_grad_batches = {denom} (it is the global batch size)"
        )
    if cfg.data.num_workers < 0:
        p.append(f"{source}: 'data.num_workers' must be >= 0")
    p += [f"{source}: '{key}'={value} {rule}" for key, value, rule in _range_problems(cfg)]
    if t.max_epochs < 1 and t.max_steps < 1:
        p.append(f"{source}: set 'trainer.max_epochs' or 'trainer.max_steps' to a positive value")
    if cfg.optim.scheduler == "plateau" and cfg.optim.warmup_epochs > 0:
        p.append(f"{source}: 'optim.warmup_epochs' is not supported with optim.scheduler=plateau")
    if t.strategy == "ddp_spawn" and t.num_nodes > 1:
        p.append(f"{source}: 'trainer.strategy'=ddp_spawn cannot span nodes; use ddp")
    for name in ("ckpt", "resume"):
        value = getattr(cfg, name)
        if value and value != "auto" and not Path(value).exists():
            p.append(f"{source}: '{name}' path does not exist: {value}")
    return p


def _range_problems(cfg: RunConfig) -> list[tuple[str, Any, str]]:
    """(key, value, rule) for every numeric setting outside its meaningful range."""
    o, t, d, m = cfg.optim, cfg.trainer, cfg.data, cfg.model
    rules: list[tuple[str, Any, bool, str]] = [
        ("optim.lr", o.lr, o.lr > 0 and math.isfinite(o.lr), "must be a positive number"),
        ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, "must be >= 0"),
        ("optim.momentum", o.momentum, 0 <= o.momentum < 1, "must be in [0, 1)"),
        ("optim.betas", o.betas, len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "must be two values in [0, 1)"),
        ("optim.warmup_epochs", o.warmup_epochs, o.warmup_epochs >= 0, "must be >= 0"),
        ("optim.warmup_start_factor", o.warmup_start_factor, 0 < o.warmup_start_factor <= 1, "must be in (0, 1]"),
        ("optim.min_lr_factor", o.min_lr_factor, 0 <= o.min_lr_factor <= 1, "must be in [0, 1]"),
        ("optim.step_gamma", o.step_gamma, o.step_gamma > 0, "must be > 0"),
        ("optim.plateau_factor", o.plateau_factor, 0 < o.plateau_factor < 1, "must be in (0, 1)"),
        ("data.shuffle_buffer", d.shuffle_buffer, d.shuffle_buffer >= 0, "must be >= 0"),
        ("data.eval_batch_size", d.eval_batch_size, d.eval_batch_size is None or d.eval_batch_size >= 1, "must be >= 1"),
        ("data.limit_train_samples", d.limit_train_samples, d.limit_train_samples is None or d.limit_train_samples >= 1,
         "must be >= 1"),
        ("trainer.max_epochs", t.max_epochs, t.max_epochs >= -1, "must be >= -1 (-1: no limit)"),
        ("trainer.max_steps", t.max_steps, t.max_steps >= -1, "must be >= -1 (-1: no limit)"),
        ("trainer.accumulate_grad_batches", t.accumulate_grad_batches, t.accumulate_grad_batches >= 1, "must be >= 1"),
        ("trainer.gradient_clip_val", t.gradient_clip_val, t.gradient_clip_val is None or t.gradient_clip_val > 0,
         "must be > 0 (or null: no clipping)"),
        ("trainer.ema_decay", t.ema_decay, t.ema_decay is None or 0 < t.ema_decay < 1, "must be in (0, 1) (or null: no EMA)"),
        ("trainer.check_val_every_n_epoch", t.check_val_every_n_epoch, t.check_val_every_n_epoch >= 1, "must be >= 1"),
        ("trainer.log_every_n_steps", t.log_every_n_steps, t.log_every_n_steps >= 1, "must be >= 1"),
        ("trainer.save_top_k", t.save_top_k, t.save_top_k >= -1, "must be >= -1 (-1: keep all)"),
        ("trainer.early_stopping_patience", t.early_stopping_patience,
         t.early_stopping_patience is None or t.early_stopping_patience >= 1, "must be >= 1 (or null: never stop early)"),
        ("trainer.ddp_timeout_s", t.ddp_timeout_s, t.ddp_timeout_s > 0, "must be > 0"),
    ]
    # family fields several schemas share (image statistics, label smoothing)
    std = getattr(d, "std", None)
    if std is not None:
        rules.append(("data.std", std, all(s > 0 and math.isfinite(s) for s in std), "must be positive (it divides the pixels)"))
    smoothing = getattr(m, "label_smoothing", None)
    if smoothing is not None:
        rules.append(("model.label_smoothing", smoothing, 0 <= smoothing < 1, "must be in [0, 1)"))
    return [(key, value, rule) for key, value, ok, rule in rules if not ok]


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg)))


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain data, interpolations as written (`${oc.env:TOKEN}`, never the token itself)."""
    out: dict[str, Any] = OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[assignment]
    for key, text in out.pop("written_as", {}).items():
        *parents, last = key.split(".")
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = text
        else:
            node[last] = text
    return out


def from_dict(data: dict[str, Any], schema: type[RunConfig]) -> RunConfig:
    """Rebuild a RunConfig saved with a run or a checkpoint (no path checks: it already ran). Interpolations
    are resolved again; one that cannot be here (a variable of another machine) keeps its text."""
    data = {k: v for k, v in data.items() if k != "written_as"}
    written = interpolations(data)
    merged = OmegaConf.merge(OmegaConf.structured(schema), data)
    for key in written:
        try:
            OmegaConf.select(merged, key, throw_on_resolution_failure=True)
        except InterpolationResolutionError:
            OmegaConf.update(merged, key, written[key].replace("${", "\\${"), merge=False)
    cfg: RunConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    cfg.written_as = written
    return cfg
