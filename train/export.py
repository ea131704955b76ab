"""`vislab export RUN_DIR --out DIR [--format F[,F...]] [--backbone-only [--with-head]] [--wandb]`.

Formats: `safetensors` (default; + model.json, loaded by `vislab.models.exported.load_exported`),
`state_dict` (model.pt), `torchscript` (model.ts) and `onnx` (model.onnx), the last two with a dynamic
batch dimension. Every written format is loaded back (ONNX through onnxruntime) and its outputs compared
with the checkpoint's on a real batch of the run's data, at another batch size than the one traced; the
max abs differences go to model.json (`verification`, and their maximum as `max_abs_diff`).

`--backbone-only` (classify and transfer runs) writes the network as a `Backbone` without its classifier,
loadable by path with `vislab.models.backbones.load_backbone(DIR)` (transfer configs: `model.backbone.weights:
DIR`; the V1 pretrained core); `--with-head` keeps the classifier and its class names. model.json keeps the
provenance chain: this run first, then the runs its backbone came from. `--wandb` logs the export as a
wandb artifact (offline without a server) with the metrics and verification as metadata.

`--out` must be a new or empty directory, so that an export never mixes with another model's files;
`--force` replaces a previous export there (it removes only the files an export writes, and refuses a
folder holding anything else). model.json ends with the sha256 of every file and of its own entries
(`vislab.models.exported`: checked on every load).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import wandb
from safetensors.torch import save_file
from torch import nn

from vislab.core.config import RunConfig, to_dict
from vislab.core.errors import ConfigError
from vislab.models.backbones import Backbone
from vislab.models.exported import (
    FILES,
    FORMAT,
    INTEGRITY,
    MODEL_JSON,
    integrity,
    load_exported,
    load_torchscript,
    network_from_checkpoint,
    onnx_session,
)
from vislab.train.config import from_dict
from vislab.train.families import get_family
from vislab.train.run import git_commit
from vislab.train.tracking import resolve_mode

Format = Literal["safetensors", "state_dict", "torchscript", "onnx"]
FORMATS: tuple[Format, ...] = ("safetensors", "state_dict", "torchscript", "onnx")
# max abs difference allowed, relative to max(1, max |output|): weights formats recompute the same graph
TOLERANCE = {"safetensors": 1e-6, "state_dict": 1e-6, "torchscript": 1e-4, "onnx": 1e-3}


def sample_batch(cfg: RunConfig, info: dict[str, Any], batch_size: int = 4) -> torch.Tensor:
    """A real input batch (first samples of the eval shards) for comparing outputs; random if unavailable."""
    try:
        return get_family(cfg.task).runtime().example_input(cfg, info, batch_size)
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # shards moved or not on this machine
        warnings.warn(f"comparing export outputs on random inputs: the run's data is not readable here ({e})", stacklevel=2)
    size = info.get("input_size", [3, 224, 224])
    return torch.randn(batch_size, *size, generator=torch.Generator().manual_seed(0))


def parse_formats(text: str) -> list[Format]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        what = f"unknown format {bad[0]!r}" if bad else "no format"
        raise ConfigError([f"--format {text!r}: {what}; choose from {', '.join(FORMATS)} (comma-separated)"])
    return formats  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- backbones
def as_backbone(model: nn.Module, cfg: RunConfig, spec: dict[str, Any],
                with_head: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The run's network as a `Backbone` (classifier dropped unless `with_head`) and its rebuild spec."""
    if isinstance(model, Backbone):
        backbone = model
    elif spec["builder"] == "create_model":
        try:
            backbone = Backbone(spec["kwargs"]["name"], model)
        except ValueError as e:
            raise ConfigError([f"--backbone-only: {e}"]) from e
    else:
        raise ConfigError([f"--backbone-only: a '{cfg.task}' model has no classification backbone "
                           f"(classify and transfer runs have one)"])
    if not with_head:
        backbone.reset_classifier(0)
    kwargs = {"name": backbone.arch, "num_classes": backbone.num_classes}
    if spec["kwargs"].get("in_channels", 3) != 3:
        kwargs["in_channels"] = spec["kwargs"]["in_channels"]
    return backbone, {"builder": "backbone", "kwargs": kwargs}


# ------------------------------------------------------------------------------------------ formats
def write_format(fmt: Format, model: nn.Module, out: Path, example: torch.Tensor) -> str:
    """Write `model` in `fmt` under `out` (traced at `example`'s batch size, batch dimension dynamic)."""
    path = out / FILES[fmt]
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(path))
    elif fmt == "state_dict":
        torch.save(state, path)
    elif fmt == "torchscript":
        with warnings.catch_warnings():  # TracerWarnings on Python scalars: shapes other than batch are fixed
            warnings.simplefilter("ignore")
            torch.jit.trace(model, example, check_trace=False).save(str(path))
    else:
        with warnings.catch_warnings():  # the TorchScript-based exporter (no onnxscript needed) warns it is legacy
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              opset_version=17)
    return path.name


@torch.no_grad()
def run_format(fmt: Format, out: Path, batch: torch.Tensor) -> torch.Tensor:
    """Outputs of the written `fmt` file, loaded the way a consumer loads it."""
    if fmt in ("safetensors", "state_dict"):
        loaded, _ = load_exported(out)
        return loaded(batch)
    if fmt == "torchscript":
        return load_torchscript(out)(batch)
    return torch.from_numpy(onnx_session(out).run(None, {"input": batch.numpy()})[0])


def verify_formats(model: nn.Module, out: Path, batch: torch.Tensor, formats: Sequence[Format]) -> dict[str, Any]:
    """Reload every format and compare with the checkpoint's model on `batch`; raise if one differs."""
    with torch.no_grad():
        ref = model(batch)
    scale = max(1.0, float(ref.abs().max()))
    results: dict[str, Any] = {}
    for fmt in formats:
        got = run_format(fmt, out, batch)
        if got.shape != ref.shape:
            raise RuntimeError(f"export check failed: {fmt} output has shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
        diff = float((ref - got).abs().max())
        if diff > TOLERANCE[fmt] * scale:
            raise RuntimeError(f"export check failed: {fmt} outputs differ by {diff:.3g} after reloading {out}")
        results[fmt] = {"max_abs_diff": diff, "batch_size": len(batch)}
    return results


# ---------------------------------------------------------------------------------------------- export
def family_spec(config: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The model spec of a saved config, by its family (any family: the CLI's export and test)."""
    return get_family(str(config.get("task", "classify")), source="checkpoint").runtime().model_spec(from_dict(config), meta)


EXPORT_FILES = {MODEL_JSON, *FILES.values(), "model.onnx.data", "wandb"}
"""What an export directory may hold (`--force` removes these and nothing else)."""


def prepare_out(out: Path, force: bool) -> None:
    """`out` is a new or empty directory; with `force`, a previous export there is removed first."""
    if out.exists() and not out.is_dir():
        raise ConfigError([f"--out {out} is a file; name a new or empty directory for the export"])
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return
    listed = ", ".join(entries[:5]) + (" ..." if len(entries) > 5 else "")
    foreign = [e for e in entries if e not in EXPORT_FILES]
    if foreign:
        raise ConfigError([f"--out {out} is not empty and not an export ({listed}); name a new or empty directory"])
    if not force:
        raise ConfigError([f"--out {out} already holds an export ({listed}); name a new directory, or add --force "
                           "to replace it (its files would otherwise mix with this model's)"])
    for name in entries:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def export_run(source: Path, out: Path, formats: Sequence[Format] = ("safetensors",), *, backbone_only: bool = False,
               with_head: bool = False, wandb: bool = False, force: bool = False) -> Path:
    if with_head and not backbone_only:
        raise ConfigError(["--with-head goes with --backbone-only (the full model always has its head)"])
    if not source.exists():
        raise ConfigError([f"export source not found: {source}"])
    prepare_out(out, force)
    ck = network_from_checkpoint(source, family_spec)
    cfg, meta, spec, model, ckpt_path, summary = from_dict(ck.config), ck.meta, ck.spec, ck.model, ck.path, ck.summary
    task_info = get_family(cfg.task).runtime().export_info(cfg, meta)
    if backbone_only:
        model, spec = as_backbone(model, cfg, spec, with_head)
        task_info.update({"num_classes": model.num_classes, "num_features": model.num_features,  # type: ignore[attr-defined]
                          "class_names": task_info.get("class_names") if with_head else None})
    run = summary.get("run_dir", str(source))
    info: dict[str, Any] = {
        "format": FORMAT,
        "kind": ("backbone+head" if with_head else "backbone") if backbone_only else "model",
        "task": cfg.task,
        "spec": spec,
        # the weights file load_exported reads: only one this export writes (none for onnx/torchscript only)
        "weights": next((FILES[f] for f in ("safetensors", "state_dict") if f in formats), None),
        **task_info,
        "metrics": summary.get("test_metrics", {}),
        "checkpoint": str(ckpt_path),
        "source_run": run,
        "provenance": [{"run": run, "checkpoint": str(ckpt_path), "task": cfg.task, "git_commit": summary.get("git_commit"),
                        "metrics": summary.get("test_metrics", {})}, *task_info.pop("backbone_provenance", [])],
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": to_dict(cfg),
    }
    batch = sample_batch(cfg, info)
    if len(batch) < 3:  # trace at one batch size, verify at another: proves the batch dimension is dynamic
        batch = torch.cat([batch] * 3)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_JSON).write_text(json.dumps(info, indent=1))  # the weights formats reload through it
    info["files"] = {fmt: write_format(fmt, model, out, batch[:2]) for fmt in formats}
    write_info(out, info)  # with its hashes: the verification below loads through the same checks as users
    info["verification"] = verify_formats(model, out, batch, formats)
    info["max_abs_diff"] = max(v["max_abs_diff"] for v in info["verification"].values())
    if wandb:
        info["wandb"] = log_export_artifact(cfg, out, info)
    write_info(out, info)
    return out


def write_info(out: Path, info: dict[str, Any]) -> None:
    """model.json with a fresh integrity block (sha256 of the files it names and of its own entries)."""
    info.pop(INTEGRITY, None)
    info[INTEGRITY] = integrity(out, info)
    (out / MODEL_JSON).write_text(json.dumps(info, indent=1))


def log_export_artifact(cfg: RunConfig, out: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Log the export's files as a wandb `model` artifact, metrics and verification as metadata."""
    # --wandb asks for it even if the run itself was not tracked; mode and server checks as for runs
    mode, reason = resolve_mode(dataclasses.replace(cfg, logger=dataclasses.replace(cfg.logger, wandb=True)))
    if mode == "disabled":
        warnings.warn(f"--wandb: tracking is disabled ({reason}); no artifact logged", stacklevel=2)
        return {"mode": "disabled"}
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{cfg.experiment}-{Path(info['source_run']).name}-{info['kind']}")
    run = wandb.init(project=cfg.logger.project, entity=cfg.logger.entity, job_type="export", dir=str(out),
                     mode=mode,  # type: ignore[arg-type]
                     config={"source_run": info["source_run"], "formats": list(info["files"])},
                     settings=wandb.Settings(silent=True))
    art = wandb.Artifact(name=name, type="model", metadata={"metrics": info["metrics"], "verification": info["verification"],
                                                             "provenance": info["provenance"], "task": info["task"]})
    for fname in [MODEL_JSON, *info["files"].values()]:
        art.add_file(str(out / fname))
    run.log_artifact(art, aliases=["latest"])
    run_id, run_dir = run.id, str(Path(run.dir).parent)
    run.finish()
    return {"mode": mode, "run_id": run_id, "artifact": name, "dir": run_dir}
