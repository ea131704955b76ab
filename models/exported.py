"""Load a vislab export without Lightning and without pickle: `model.json` + `model.safetensors`.

    from vislab.models.exported import load_exported
    model, info = load_exported("exports/resnet50-run")   # eval mode, CPU
    info["mean"], info["std"], info["input_size"], info["class_names"]
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from torch import nn

MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a network from `{'builder': 'module:function', 'kwargs': {...}}` (vislab's own builders only)."""
    module_name, _, fn_name = spec["builder"].partition(":")
    if not module_name.startswith("vislab."):
        raise ValueError(f"refusing to import builder {spec['builder']!r}: not a vislab module")
    fn = getattr(importlib.import_module(module_name), fn_name)
    return fn(**spec.get("kwargs", {}))


def load_exported(directory: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / MODEL_JSON).is_file():
        raise FileNotFoundError(f"{d}: no {MODEL_JSON}: not a vislab export")
    info = json.loads((d / MODEL_JSON).read_text())
    model = build_from_spec(info["spec"])
    state = load_file(str(d / info.get("weights", WEIGHTS)), device=map_location)
    load_state_strict(model, state, source=str(d))
    return model.eval(), info


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
