"""Boundary -> assembly -> loop: run directories, fit / validate / test, and the run summary.

Run directory `runs/<experiment>/<run_id>/`: config.yaml (the config that ran), wandb_id.txt,
checkpoints/, logs/version_*/metrics.csv, wandb/, summary.json. With `trainer.devices > 1` Lightning
re-executes the same command for the other ranks; they find the run directory in VISLAB_RUN_DIR.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import wandb
from pytorch_lightning.callbacks.weight_averaging import WeightAveraging
from pytorch_lightning.loggers import CSVLogger

from vislab.core.checkpoints import (
    CKPT_KEY,
    CONFIG_FILE,
    SUMMARY_FILE,
    load_checkpoint,
    read_summary,
    resume_checkpoint,
)
from vislab.core.config import RunConfig, to_dict, to_yaml
from vislab.core.dist import is_rank_zero
from vislab.core.errors import ConfigError
from vislab.models.family import Runtime
from vislab.train.config import from_dict, load_config
from vislab.train.families import get_family, monitor_of
from vislab.train.heartbeat_callback import Heartbeat
from vislab.train.keylog import SampleKeyLog
from vislab.train.resume import OptimChanges, RunState, check_resume
from vislab.train.slurm.preemption import Preemption
from vislab.train.slurm.signals import signals_caught
from vislab.train.tracking import log_checkpoint_artifact, resolve_mode, tensorboard_logger, wandb_logger
from vislab.train.trainer import build_trainer

RUN_DIR_ENV = "VISLAB_RUN_DIR"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]


@dataclass
class Run:
    dir: Path
    resume_ckpt: str | None
    optim_changes: OptimChanges | None = None
    """Changed optimizer hyperparameters a resume applies to the restored optimizer."""


def prepare_run(cfg: RunConfig) -> Run:
    """Pick (or create) the run directory and the checkpoint to resume from."""
    resume = cfg.resume
    if resume and resume != "auto":
        p = Path(resume)
        if p.is_dir():
            ckpt = resume_checkpoint(p)
            if ckpt is None:
                raise ConfigError([f"resume={resume}: no readable checkpoint in {p} or {p / 'checkpoints'}"])
            return Run(p, str(ckpt))
        run_dir = p.parent.parent if (p.parent.parent / CONFIG_FILE).is_file() else _new_run_dir(cfg)
        return Run(run_dir, str(p))
    run_dir = Path(os.environ[RUN_DIR_ENV]) if RUN_DIR_ENV in os.environ else _new_run_dir(cfg, reuse=resume == "auto")
    ckpt = resume_checkpoint(run_dir) if resume == "auto" and run_dir.is_dir() else None
    return Run(run_dir, str(ckpt) if ckpt else None)


def _new_run_dir(cfg: RunConfig, reuse: bool = False) -> Path:
    """The directory of a new run; one that already holds a run is refused (unless `reuse`: resume=auto)."""
    run_id = cfg.run_id or os.environ.get("VISLAB_RUN_ID")
    if run_id is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(["launched as one of several processes (torchrun/srun) without run_id=...: "
                               "every rank must be given the same run_id"])
        run_id = new_run_id()
    run_dir = Path(cfg.runs_root) / cfg.experiment / run_id
    # rank 0 decides: under torchrun/srun the other ranks may start after it created the directory
    if not reuse and is_rank_zero() and run_dir.is_dir() and any(run_dir.iterdir()):
        state = "a finished run" if (run_dir / SUMMARY_FILE).is_file() else "a run"
        raise ConfigError([f"run_id={run_id}: {run_dir} already holds {state}; a new run never reuses it: resume it "
                           f"with `vislab fit {run_dir}` (or resume=auto), or choose another run_id"])
    return run_dir


def write_run_config(run: Run, cfg: RunConfig) -> None:
    """Rank 0 saves the config that runs; an earlier attempt's differing config is kept beside it."""
    run.dir.mkdir(parents=True, exist_ok=True)
    cfg.run_id = run.dir.name
    cfg.runs_root = str(run.dir.parent.parent)
    text = to_yaml(cfg)
    path = run.dir / CONFIG_FILE
    if path.is_file() and path.read_text() != text:
        path.rename(run.dir / f"config.{time.strftime('%Y%m%d-%H%M%S')}.yaml")
    path.write_text(text)


def load_run_config(run_dir: Path, overrides: list[str]) -> RunConfig:
    return load_config(run_dir / CONFIG_FILE, [f"resume={run_dir}", *overrides])  # an explicit resume=... wins


# ------------------------------------------------------------------------------------- checkpoints
def read_checkpoint_config(path: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    ck = load_checkpoint(path)
    info = ck.get(CKPT_KEY)
    if not isinstance(info, dict) or "config" not in info:
        raise ConfigError([f"{path}: not a vislab checkpoint (no 'vislab' entry with the run's config)"])
    return from_dict(info["config"]), info.get("meta", {})


def check_checkpoint_matches(cfg: RunConfig, path: str | Path) -> None:
    """A checkpoint from another family or architecture is a config error, found before any work."""
    saved, _ = read_checkpoint_config(path)
    problems = []
    if saved.task != cfg.task:
        problems.append(f"{path}: checkpoint of task '{saved.task}', config is task '{cfg.task}'")
    else:
        a, b = to_dict(saved)["model"], to_dict(cfg)["model"]
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key) and _is_architecture_key(key):
                problems.append(f"{path}: checkpoint has model.{key}={a.get(key)!r}, config has model.{key}={b.get(key)!r}")
    if problems:
        raise ConfigError(problems)


def _is_architecture_key(key: str) -> bool:
    # losses, regularisation strengths and smoothing may differ between training and evaluation
    return not any(s in key for s in ("loss", "smoothing", "dropout", "reg", "penalty", "gamma", "l1"))


# ------------------------------------------------------------------------------------------- stages
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("vislab", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "webdataset", "wandb", "omegaconf"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    src = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _build(cfg: RunConfig) -> tuple[Any, Any]:
    runtime = get_family(cfg.task).runtime()
    dm = runtime.datamodule(cfg)
    module = runtime.module(cfg, dm.meta)
    module.monitor = monitor_of(cfg)  # type: ignore[assignment]
    module.export_facts = partial(export_facts, runtime, cfg)  # a partial, not a lambda: ddp_spawn pickles it
    return dm, module


def export_facts(runtime: Runtime, cfg: RunConfig, meta: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records to rebuild its network anywhere: the builder spec and the export info."""
    return {"spec": runtime.model_spec(cfg, meta), "info": runtime.export_info(cfg, meta)}


def fit(cfg: RunConfig) -> Path:
    with signals_caught():  # before the slow imports; the handlers stay until the command ends
        t0 = time.time()
        if cfg.logger.mode == "online" and is_rank_zero():
            resolve_mode(cfg)  # no server for logger.mode=online is a config error: found before the run dir exists
        run = prepare_run(cfg)
        if run.resume_ckpt:
            check_checkpoint_matches(cfg, run.resume_ckpt)
            run.optim_changes = check_resume(cfg, run.resume_ckpt)
        if is_rank_zero():
            write_run_config(run, cfg)
        with _run_dir_env(run.dir):
            return _fit(cfg, run, t0)


@contextlib.contextmanager
def _run_dir_env(run_dir: Path) -> Iterator[None]:
    """The ranks Lightning starts re-run this command and read the run directory from the environment; the
    process that set it unsets it afterwards, so a later fit in the same process is a new run."""
    owned = RUN_DIR_ENV not in os.environ
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        yield
    finally:
        if owned:
            os.environ.pop(RUN_DIR_ENV, None)


def _fit(cfg: RunConfig, run: Run, t0: float) -> Path:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, module = _build(cfg)
    loggers: list[Any] = [CSVLogger(save_dir=str(run.dir), name="logs")]
    wb = wandb_logger(cfg, run.dir, {**to_dict(cfg), "derived": cfg.derived()}) if is_rank_zero() else None
    if wb is not None:
        loggers.append(wb)
    tb = tensorboard_logger(cfg, run.dir, to_yaml(cfg))
    if tb is not None:
        loggers.append(tb)
    resume = [RunState()] + ([run.optim_changes] if run.optim_changes else [])
    trainer = build_trainer(cfg, run.dir, loggers, extra_callbacks=resume + job_callbacks(cfg, run.dir))
    model: Any = torch.compile(module) if cfg.trainer.compile else module
    if is_rank_zero():
        print(f"run directory: {run.dir}" + (f" (resuming from {run.resume_ckpt})" if run.resume_ckpt else ""),
              file=sys.stderr, flush=True)
    trainer.fit(model, datamodule=dm, ckpt_path=run.resume_ckpt)
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or str(run.dir / "checkpoints" / "last.ckpt")
    # the checkpoint's state_dict holds the EMA weights: test those (the EMA callback would restore the raw ones)
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]  # type: ignore[attr-defined]
    results = trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    report = get_family(cfg.task).runtime().test_report(module)
    if trainer.is_global_zero:
        summary = write_summary(cfg, run, trainer, dm, best, metrics, time.time() - t0, wb, report)
        if wb is not None and cfg.logger.log_checkpoints:
            log_checkpoint_artifact(wb, Path(best), metrics, name=f"{cfg.experiment}-{run.dir.name}")
        if wb is not None:
            wb.experiment.summary.update({f"final/{k}": v for k, v in metrics.items()})
            wandb.finish()
        print(json.dumps(summary["test_metrics"]), file=sys.stderr)
        if summary.get("wandb", {}).get("mode") == "offline":
            print(f"wandb (offline): wandb sync {run.dir / 'wandb'}/offline-run-*", file=sys.stderr)
    return run.dir


def job_callbacks(cfg: RunConfig, run_dir: Path) -> list[Any]:
    """Checkpoint-and-stop on SIGUSR1/SIGTERM (Slurm requeue), and the optional sample-key audit log."""
    # the key log first: a batch that goes into the stop checkpoint has been logged
    return ([SampleKeyLog(run_dir)] if cfg.logger.sample_keys else []) + [Preemption(run_dir),
                                                                          Heartbeat(run_dir, cfg.logger.heartbeat_s)]


def write_summary(cfg: RunConfig, run: Run, trainer: Any, dm: Any, best: str, metrics: dict[str, float],
                  wall: float, wb: Any, report: dict[str, Any] | None = None) -> dict[str, Any]:
    metric, mode = monitor_of(cfg)
    ckpt_cb = trainer.checkpoint_callback
    score = getattr(ckpt_cb, "best_model_score", None)
    summary = {
        "run_dir": str(run.dir),
        "experiment": cfg.experiment,
        "task": cfg.task,
        "model": to_dict(cfg)["model"],
        "test_split": dm.test_split,
        "test_metrics": metrics,
        "test_report": report or {},
        "best_checkpoint": best,
        "monitor": {"metric": metric, "mode": mode, "best": float(score) if score is not None else None},
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "resumed_from": run.resume_ckpt,
        "wall_time_s": round(wall, 2),
        "num_processes": trainer.world_size,
        "git_commit": git_commit(),
        "versions": _versions(),
        "data_manifests_sha256": dm.manifest_hashes(),
        "wandb": {"id": (run.dir / "wandb_id.txt").read_text().strip(), "mode": wb._vislab_mode[0],
                  "reason": wb._vislab_mode[1]} if wb is not None else {"mode": "disabled"},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    (run.dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    return summary


def evaluate(cfg: RunConfig, stage: str) -> dict[str, Any]:
    """`vislab validate|test CONFIG ckpt=PATH`: metrics of a checkpoint on val/ or test/ (else val/)."""
    if not cfg.ckpt:
        raise ConfigError([f"vislab {stage} needs ckpt=PATH"])
    check_checkpoint_matches(cfg, cfg.ckpt)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, module = _build(cfg)
    with tempfile.TemporaryDirectory(prefix="vislab-eval-") as tmp:
        trainer = build_trainer(cfg, Path(tmp), loggers=[], stage=stage)
        run_stage = trainer.validate if stage == "validate" else trainer.test
        results = run_stage(module, datamodule=dm, ckpt_path=cfg.ckpt, verbose=False)
    metrics: dict[str, Any] = {k: float(v) for k, v in (results[0] if results else {}).items()}
    if stage == "test":
        metrics.update(get_family(cfg.task).runtime().test_report(module))
    return metrics


def summary_of(run_dir: Path) -> dict[str, Any]:
    summary = read_summary(run_dir)
    if not summary:
        raise ConfigError([f"{run_dir}: no {SUMMARY_FILE} (did the run finish?)"])
    return summary


__all__ = ["fit", "evaluate", "prepare_run", "load_run_config", "read_checkpoint_config", "summary_of", "Run",
           "ConfigError", "from_dict"]
