"""`vislab export RUN_DIR --out DIR`: the best weights as safetensors + `model.json`, verified by reloading.

model.json holds what a consumer needs with no Lightning and no pickle: how to rebuild the network
(`spec`), class names, input size, normalisation, the run's metrics and config, and the git commit.
The export is loaded back and its outputs compared with the checkpoint's on a real batch.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vislab.models.exported import MODEL_JSON, WEIGHTS, build_from_spec, load_exported, load_state_strict
from vislab.train.checkpoints import load_checkpoint
from vislab.train.config import ConfigError, RunConfig, from_dict, to_dict
from vislab.train.run import SUMMARY_FILE, git_commit
from vislab.train.tasks import get_task


def resolve_checkpoint(source: Path) -> tuple[Path, dict[str, Any]]:
    """A run directory (its best checkpoint, from summary.json or the checkpoints folder) or a .ckpt."""
    if source.is_file():
        return source, {}
    if not source.is_dir():
        raise ConfigError([f"export source not found: {source}"])
    summary = json.loads((source / SUMMARY_FILE).read_text()) if (source / SUMMARY_FILE).is_file() else {}
    best = summary.get("best_checkpoint")
    if best and Path(best).is_file():
        return Path(best), summary
    ckpts = sorted((source / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise ConfigError([f"{source}: no checkpoints to export"])
    return ckpts[-1], summary


def model_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bare network's tensors from a LightningModule state_dict (`model.` prefix)."""
    return {k[len("model."):]: v.contiguous() for k, v in state_dict.items() if k.startswith("model.")}


def sample_batch(cfg: RunConfig, info: dict[str, Any], batch_size: int = 4) -> torch.Tensor:
    """A real input batch (first samples of the eval shards) for comparing outputs; random if unavailable."""
    impl = get_task(cfg.task).implementation()
    try:
        return impl.example_input(cfg, info, batch_size)
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # shards moved or not on this machine
        warnings.warn(f"comparing export outputs on random inputs: the run's data is not readable here ({e})", stacklevel=2)
    size = info.get("input_size", [3, 224, 224])
    return torch.randn(batch_size, *size, generator=torch.Generator().manual_seed(0))


def export_run(source: Path, out: Path) -> Path:
    ckpt_path, summary = resolve_checkpoint(source)
    ck = load_checkpoint(ckpt_path)
    if "vislab" not in ck:
        raise ConfigError([f"{ckpt_path}: not a vislab checkpoint"])
    cfg = from_dict(ck["vislab"]["config"])
    meta = ck["vislab"].get("meta", {})
    impl = get_task(cfg.task).implementation()
    spec = impl.model_spec(cfg, meta)
    model = build_from_spec(spec)
    state = model_state(ck["state_dict"])
    load_state_strict(model, state, source=str(ckpt_path))
    model.eval()

    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file(state, str(out / WEIGHTS))
    info: dict[str, Any] = {
        "format": "vislab-export/1",
        "task": cfg.task,
        "spec": spec,
        "weights": WEIGHTS,
        **impl.export_info(cfg, meta),
        "metrics": summary.get("test_metrics", {}),
        "checkpoint": str(ckpt_path),
        "source_run": summary.get("run_dir", str(source)),
        "provenance": [{"run": summary.get("run_dir", str(source)), "checkpoint": str(ckpt_path),
                        "git_commit": summary.get("git_commit")}],
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": to_dict(cfg),
    }
    (out / MODEL_JSON).write_text(json.dumps(info, indent=1))
    info["max_abs_diff"] = verify_export(model, out, sample_batch(cfg, info))
    (out / MODEL_JSON).write_text(json.dumps(info, indent=1))
    return out


@torch.no_grad()
def verify_export(model: nn.Module, out: Path, batch: torch.Tensor) -> float:
    """Reload the export and compare its outputs with the checkpoint's model on `batch`."""
    loaded, _ = load_exported(out)
    ref, got = model(batch), loaded(batch)
    diff = float((ref - got).abs().max()) if isinstance(ref, torch.Tensor) else 0.0
    if diff > 1e-5:
        raise RuntimeError(f"export check failed: outputs differ by {diff:.3g} after reloading {out}")
    return diff
