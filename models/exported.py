"""Load a vislab export without Lightning and without pickle, in the format the consumer needs.

An export directory holds `model.json` (how to rebuild the network, normalisation, input size, class
names, metrics, provenance, verification results) and one or more of:

    model.safetensors   weights  -> load_exported(dir)          (rebuilds the network from `spec`)
    model.pt            weights  -> load_exported(dir)          (torch state dict, read with weights_only)
    model.ts            TorchScript, dynamic batch -> load_torchscript(dir)   (no vislab needed)
    model.onnx          ONNX, dynamic batch        -> onnx_session(dir)       (onnxruntime)

    from vislab.models.exported import load_exported
    model, info = load_exported("exports/resnet50-run")   # eval mode, CPU
    info["mean"], info["std"], info["input_size"], info["class_names"], info["provenance"]

Backbones exported with `--backbone-only` load as `vislab.models.backbones.Backbone` (see `load_backbone`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from vislab.core.checkpoints import CKPT_KEY, best_checkpoint, load_checkpoint, model_state
from vislab.core.errors import ConfigError
from vislab.models.registry import get_builder

MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"
FILES = {"safetensors": WEIGHTS, "state_dict": "model.pt", "torchscript": "model.ts", "onnx": "model.onnx"}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a network from `{'builder': NAME, 'kwargs': {...}}` (a registered builder; nothing is imported
    by name, so a model.json cannot make vislab run arbitrary code)."""
    return get_builder(spec["builder"])(**spec.get("kwargs", {}))


@dataclass
class CheckpointNetwork:
    """A checkpoint's bare network and what it was built from."""

    model: nn.Module
    """The network with the checkpoint's weights, in eval mode."""
    config: dict[str, Any]
    """The run's config as saved in the checkpoint (rebuild a typed one with the family's schema)."""
    meta: dict[str, Any]
    spec: dict[str, Any]
    path: Path
    summary: dict[str, Any]
    """The run's summary.json ({} for a bare .ckpt or an unfinished run)."""

def network_from_checkpoint(source: str | Path,
                            spec_of: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]) -> CheckpointNetwork:
    """Checkpoint (or run directory: its best checkpoint) -> bare network. `spec_of(config, meta)` is the
    family's `model_spec` on the saved config. Foreign files and weights that do not fit are ConfigErrors."""
    path, summary = best_checkpoint(Path(source))
    ck = load_checkpoint(path)
    info = ck.get(CKPT_KEY)
    if not isinstance(info, dict) or "config" not in info:
        raise ConfigError([f"{path}: not a vislab checkpoint (no '{CKPT_KEY}' entry with the run's config)"])
    meta = info.get("meta", {})
    spec = spec_of(info["config"], meta)
    model = build_from_spec(spec)
    try:
        load_state_strict(model, model_state(ck["state_dict"]), source=str(path))
    except ValueError as e:
        raise ConfigError([str(e)]) from e
    return CheckpointNetwork(model.eval(), info["config"], meta, spec, path, summary)


def read_info(directory: str | Path) -> dict[str, Any]:
    d = Path(directory)
    if not (d / MODEL_JSON).is_file():
        raise FileNotFoundError(f"{d}: no {MODEL_JSON}: not a vislab export")
    return json.loads((d / MODEL_JSON).read_text())


def export_file(directory: str | Path, fmt: str) -> Path:
    """The file of format `fmt` in an export, or FileNotFoundError naming the formats it has."""
    d = Path(directory)
    path = d / read_info(d).get("files", {}).get(fmt, FILES[fmt])
    if not path.is_file():
        have = [f for f, name in FILES.items() if (d / name).is_file()]
        raise FileNotFoundError(f"{d}: no {fmt} file ({path.name}); this export has: {', '.join(have) or 'nothing'}")
    return path


def load_weights(directory: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The exported state dict: model.safetensors, else model.pt."""
    d = Path(directory)
    info = read_info(d)
    name = info.get("weights", WEIGHTS)
    if (d / name).is_file() and name.endswith(".safetensors"):
        from safetensors.torch import load_file  # safetensors imports torch: kept off the CLI's start-up path

        return load_file(str(d / name), device=map_location)
    pt = d / FILES["state_dict"]
    if pt.is_file():
        import torch  # torch: kept off the CLI's start-up path

        return torch.load(pt, map_location=map_location, weights_only=True)
    export_file(d, "safetensors")  # raises, naming the formats present
    raise AssertionError("unreachable")


def load_exported(directory: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(network in eval mode, model.json) from the safetensors or state-dict weights of an export."""
    d = Path(directory)
    info = read_info(d)
    model = build_from_spec(info["spec"])
    load_state_strict(model, load_weights(d, map_location), source=str(d))
    return model.eval(), info


def load_torchscript(directory: str | Path, map_location: str = "cpu") -> Any:
    import torch  # torch: kept off the CLI's start-up path

    return torch.jit.load(str(export_file(directory, "torchscript")), map_location=map_location).eval()


def onnx_session(directory: str | Path) -> Any:
    """An onnxruntime CPU session; run it with `session.run(None, {"input": x.numpy()})[0]`."""
    import onnxruntime as ort  # onnxruntime: only for ONNX exports

    return ort.InferenceSession(str(export_file(directory, "onnx")), providers=["CPUExecutionProvider"])


def load_state_strict(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """load_state_dict that names the first offending tensors (missing, unexpected, wrong shape)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
    if shapes:
        problems.append(f"shape mismatch {shapes[:3]}")
    if problems:
        raise ValueError(f"{source}: weights do not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state)
