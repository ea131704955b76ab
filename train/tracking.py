"""wandb tracking that never hangs: online only with an API key *and* a reachable server, else offline.

(wandb with a key and no network waits ~100 s and raises; without a key it fails at once. Both are
decided here in < 3 s before wandb is touched.) The wandb run id is created once and stored in the run
directory, so a resumed or requeued run continues the same wandb run. Rank 0 only (Lightning's logger).
"""

from __future__ import annotations

import importlib.util
import netrc
import os
import socket
import uuid
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vislab.core.config import RunConfig
from vislab.core.errors import ConfigError

WANDB_ID_FILE = "wandb_id.txt"
TENSORBOARD_DIR = "tensorboard"


def _api_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(timeout: float = 2.5) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(cfg: RunConfig) -> tuple[str, str]:
    """(mode, reason): 'online' | 'offline' | 'disabled'."""
    if not cfg.logger.wandb:
        return "disabled", "logger.wandb=false"
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("offline", "dryrun"):
        return "offline", "WANDB_MODE"
    if env == "disabled":
        return "disabled", "WANDB_MODE"
    if cfg.logger.mode in ("offline", "disabled"):
        return cfg.logger.mode, "logger.mode"
    # decided here in seconds: wandb itself would hang without a server. 'online' asked for the server, so its
    # absence is an error unless logger.fallback_offline allows offline; 'auto' goes offline
    reason = "no wandb API key" if not _api_key_present() else "wandb server unreachable" if not _reachable() else ""
    if not reason:
        return "online", "API key and network"
    if cfg.logger.mode == "online" and not cfg.logger.fallback_offline:
        raise ConfigError([f"'logger.mode'=online: {reason} ({os.environ.get('WANDB_BASE_URL', 'https://api.wandb.ai')}); "
                           "set logger.mode=offline, or logger.fallback_offline=true to log offline instead"])
    if cfg.logger.mode == "online":
        warnings.warn(f"logger.mode=online: {reason}; logging OFFLINE (logger.fallback_offline=true)", stacklevel=2)
    return "offline", reason


def wandb_id(run_dir: Path) -> str:
    """The run's wandb id, created on first use and kept in the run directory."""
    path = run_dir / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


def wandb_logger(cfg: RunConfig, run_dir: Path, config: dict[str, Any]) -> Any | None:
    mode, reason = resolve_mode(cfg)
    if mode == "disabled":
        return None
    from vislab.train.slurm.preemption import (
        TerminationSafeWandbLogger as WandbLogger,  # torch and Lightning: kept off the CLI's start-up path
    )

    os.environ["WANDB_MODE"] = mode  # rank 0 decides; the env makes the decision stick for wandb internals
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb  # wandb: slow to import, only when tracking

    lg = cfg.logger
    logger = WandbLogger(
        project=lg.project, entity=lg.entity, group=lg.group, tags=list(lg.tags) or None,
        id=wandb_id(run_dir), resume="allow", save_dir=str(run_dir), name=f"{cfg.experiment}/{run_dir.name}",
        offline=mode == "offline", config=config, job_type="fit",
        # Slurm's SIGTERM (preemption, scancel, requeue) also kills wandb's service process, which keeps only
        # what it has written to the .wandb file: flush every second instead of every 15 s
        settings=wandb.Settings(init_timeout=90, silent=True, x_transaction_log_flush_interval=1.0),
    )
    logger._vislab_mode = (mode, reason)  # type: ignore[attr-defined]
    return logger


def log_checkpoint_artifact(logger: Any, path: Path, metrics: dict[str, float], name: str) -> None:
    import wandb  # wandb: slow to import, only when tracking

    art = wandb.Artifact(name=name, type="model", metadata=metrics)
    art.add_file(str(path))
    logger.experiment.log_artifact(art, aliases=["best", "latest"])


def tensorboard_logger(cfg: RunConfig, run_dir: Path, config_yaml: str) -> Any | None:
    """Lightning's TensorBoardLogger writing to `<run_dir>/tensorboard/` (one folder per run, so
    `tensorboard --logdir runs` lists runs as `<experiment>/<run_id>/tensorboard`), with the config as text."""
    if not cfg.logger.tensorboard:
        return None
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(["logger.tensorboard=true needs the tensorboard package (pip install tensorboard), "
                           "or set logger.tensorboard=false"])
    from pytorch_lightning.loggers import TensorBoardLogger  # Lightning: kept off the CLI's start-up path

    logger = TensorBoardLogger(save_dir=str(run_dir), name=TENSORBOARD_DIR, version="", default_hp_metric=False)
    # markdown: an indented block keeps the YAML's layout on TensorBoard's text tab
    logger.experiment.add_text("config", "\n".join("    " + line for line in config_yaml.splitlines()))
    return logger
