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

Integrity (format vislab-export/3): `model.json` holds `integrity.files` (the sha256 of every file it names)
and `integrity.fields` (a sha256 of every one of its own top-level entries as exported). Loading checks
both: a weights or ONNX/TorchScript file that is not the exported one, or an edited mean / std /
num_classes / spec, is a ConfigError naming the file or the entry. num_classes and class_names are also
checked against the network's spec (whose shapes the weights must fit). Exports of format 2 and older
carry no hashes and load as before.
"""

from __future__ import annotations

import hashlib
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
FORMAT = "vislab-export/3"
"""The format written today: with `integrity` (hashes of the files and of model.json's own entries)."""
INTEGRITY = "integrity"


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
    info: dict[str, Any]
    """What an export's model.json would record (normalisation, input size, class names), where stored."""

def network_from_checkpoint(source: str | Path,
                            spec_of: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
                            ) -> CheckpointNetwork:
    """Checkpoint (or run directory: its best checkpoint) -> bare network. `spec_of(config, meta)` is the
    family's `model_spec` on the saved config; without it, the spec the checkpoint recorded (checkpoints
    written since the family layout record it). Foreign files and weights that do not fit are ConfigErrors."""
    path, summary = best_checkpoint(Path(source))
    ck = load_checkpoint(path)
    info = ck.get(CKPT_KEY)
    if not isinstance(info, dict) or "config" not in info:
        raise ConfigError([f"{path}: not a vislab checkpoint (no '{CKPT_KEY}' entry with the run's config)"])
    meta = info.get("meta", {})
    if spec_of is not None:
        spec = spec_of(info["config"], meta)
    elif "spec" in info:
        spec = info["spec"]
    else:
        raise ConfigError([f"{path}: written by an older vislab, this checkpoint does not record how to rebuild its "
                           f"network; export its run first (`vislab export RUN --out DIR`) and use the export"])
    model = build_from_spec(spec)
    try:
        load_state_strict(model, model_state(ck["state_dict"]), source=str(path))
    except ValueError as e:
        raise ConfigError([str(e)]) from e
    return CheckpointNetwork(model.eval(), info["config"], meta, spec, path, summary, info.get("info", {}))


def read_info(directory: str | Path) -> dict[str, Any]:
    """model.json, its entries checked against the hashes stored at export (format 3) and the spec."""
    d = Path(directory)
    if not (d / MODEL_JSON).is_file():
        raise FileNotFoundError(f"{d}: no {MODEL_JSON}: not a vislab export")
    try:
        info = json.loads((d / MODEL_JSON).read_text())
    except ValueError as e:
        raise ConfigError([f"{d / MODEL_JSON}: not valid JSON ({e})"]) from e
    check_fields(info, d / MODEL_JSON)
    return info


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def field_hashes(info: dict[str, Any]) -> dict[str, str]:
    """sha256 of each top-level entry of model.json (canonical JSON), the integrity block excepted."""
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest() for k, v in info.items() if k != INTEGRITY}


def integrity(directory: Path, info: dict[str, Any]) -> dict[str, Any]:
    """The block export writes last into model.json: hashes of the files it names and of its own entries."""
    names = sorted({*info.get("files", {}).values(), *([info["weights"]] if info.get("weights") else [])})
    return {"files": {n: sha256_file(directory / n) for n in names if (directory / n).is_file()}, "fields": field_hashes(info)}


def check_fields(info: dict[str, Any], path: Path) -> None:
    """An edited, added or removed entry of model.json is an error naming it; so are num_classes and
    class_names that contradict the network's spec."""
    block = info.get(INTEGRITY)
    if block is None:
        if info.get("format") == FORMAT:
            raise ConfigError([f"{path}: the '{INTEGRITY}' block is missing (a {FORMAT} export always has one): edited?"])
        return  # older formats: no hashes to check
    stored, now = block.get("fields", {}), field_hashes(info)
    changed = sorted(k for k in stored.keys() | now.keys() if stored.get(k) != now.get(k))
    if changed:
        raise ConfigError([f"{path}: {', '.join(repr(k) for k in changed)} differ(s) from what was exported (the hashes "
                           f"stored at export do not match): model.json was edited; export the run again"])
    spec_classes = info.get("spec", {}).get("kwargs", {}).get("num_classes")
    names = info.get("class_names")
    if info.get("num_classes") is not None and spec_classes is not None and info["num_classes"] != spec_classes:
        raise ConfigError([f"{path}: num_classes {info['num_classes']} contradicts the network's {spec_classes} outputs"])
    if names and spec_classes and len(names) != spec_classes:
        raise ConfigError([f"{path}: {len(names)} class_names for a network with {spec_classes} outputs"])


def check_file(directory: Path, info: dict[str, Any], name: str) -> None:
    """The file `name` of an export is the one exported (sha256 in model.json; format 3 only)."""
    block = info.get(INTEGRITY)
    if block is None:
        return
    expected = block.get("files", {}).get(name)
    if expected is None:
        raise ConfigError([f"{directory / name}: not part of this export (model.json lists {', '.join(block['files'])})"])
    if sha256_file(directory / name) != expected:
        raise ConfigError([f"{directory / name}: sha256 differs from the one in {MODEL_JSON}: the file was changed or "
                           "replaced after export (corrupt copy, or another model's file); export the run again"])


def export_file(directory: str | Path, fmt: str) -> Path:
    """The file of format `fmt` in an export (checked against its hash), or FileNotFoundError naming the
    formats it has."""
    d = Path(directory)
    info = read_info(d)
    files = info.get("files", {})
    name = files.get(fmt) if INTEGRITY in info else files.get(fmt, FILES[fmt])  # format 3: only what it lists
    path = d / (name or FILES[fmt])
    if name is None or not path.is_file():
        have = list(files) if INTEGRITY in info else [f for f, n in FILES.items() if (d / n).is_file()]
        raise FileNotFoundError(f"{d}: no {fmt} file ({path.name}); this export has: {', '.join(have) or 'nothing'}")
    check_file(d, info, path.name)
    return path


def load_weights(directory: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The exported state dict: model.safetensors, else model.pt."""
    d = Path(directory)
    info = read_info(d)
    name = info.get("weights") or WEIGHTS  # None: an export without a weights format (onnx/torchscript only)
    if (d / name).is_file() and name.endswith(".safetensors"):
        from safetensors.torch import load_file  # safetensors imports torch: kept off the CLI's start-up path

        check_file(d, info, name)
        return load_file(str(d / name), device=map_location)
    pt = d / FILES["state_dict"]
    if pt.is_file():
        import torch  # torch: kept off the CLI's start-up path

        check_file(d, info, pt.name)
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
