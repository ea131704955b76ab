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
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

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
    log_checkpoints: bool = False
    """Upload the best checkpoint as a wandb artifact at the end of the run."""
    sample_keys: bool = False
    """Append the sample keys of every training batch to `<run_dir>/sample_keys/rank<R>.txt` (audits what a
    run read, e.g. across preemptions and restarts)."""


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
    except Exception as e:  # yaml syntax errors come in several types
        raise ConfigError([f"{path}: not valid YAML: {str(e).splitlines()[0]}"]) from e
    if not isinstance(loaded, DictConfig):
        raise ConfigError([f"{path}: expected a mapping at the top level"])
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


def task_of(path: str | os.PathLike[str], overrides: list[str] | None = None) -> str:
    """The `task:` a config file + overrides select (default classify), without validating anything else."""
    return str(_parse_overrides(overrides or []).get("task", _read_yaml(Path(path)).get("task", "classify")))


def load_config(path: str | os.PathLike[str], overrides: list[str] | None, schema_of: SchemaOf, *,
                check: bool = True) -> RunConfig:
    """Read YAML + overrides, validate against the schema `schema_of(task)` names, return plain dataclasses.

    Raises ConfigError listing every problem (unknown keys with the closest valid name, wrong types,
    missing required values, and the family's own checks: data paths, architecture names, ...).
    """
    path = Path(path)
    user = _read_yaml(path)
    over = _parse_overrides(overrides or [])
    schema_cls, family_check = schema_of(str(over.get("task", user.get("task", "classify"))), str(path))
    schema = OmegaConf.structured(schema_cls)

    problems = _check_leaves(schema, user, str(path)) + _check_leaves(schema, over, "command line")
    if problems:
        raise ConfigError(problems)
    merged = OmegaConf.merge(schema, user, over)
    missing = sorted(k for k in OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError([f"{path}: required key '{k}' has no value (set it in the file or as {k}=...)" for k in missing])
    cfg: RunConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    if check:
        problems = check_common(cfg, str(path)) + family_check(cfg, str(path))
        if problems:
            raise ConfigError(problems)
    return cfg


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


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]


def from_dict(data: dict[str, Any], schema: type[RunConfig]) -> RunConfig:
    """Rebuild a RunConfig saved with a run or a checkpoint (no path checks: it already ran)."""
    merged = OmegaConf.merge(OmegaConf.structured(schema), data)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]
