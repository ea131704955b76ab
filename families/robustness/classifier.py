"""The classifier under test: a pretrained backbone name, a vislab export, or a classify / transfer run
(its directory or one .ckpt), wrapped to take [0, 1] pixels.

    clf = load_classifier("efficientnet_lite0")        # offline ImageNet weights, its TF normalisation
    clf = load_classifier("exports/my-run")            # `vislab export RUN --out exports/my-run`
    clf = load_classifier("runs/digits/20250101-x")    # a run directory: its best checkpoint
    logits = clf.net(x)                                # x: (B, 3, 224, 224) in [0, 1]; normalisation inside

The normalisation lives inside `clf.net`, so degradations and adversarial perturbations are both defined in
[0, 1] pixel space (Foolbox's `bounds=(0, 1)`). A model trained on another input size (an export's or a
checkpoint's `input_size`) sees the degraded 224 px image resized to it; a 1-channel model sees its luminance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

from vislab.core.checkpoints import CONFIG_FILE
from vislab.core.errors import ConfigError
from vislab.models.backbones import load_backbone
from vislab.models.exported import MODEL_JSON, load_exported, network_from_checkpoint


class Normalised(nn.Module):
    """[0, 1] RGB pixels -> (luminance for a 1-channel model) -> (resize to the model's input size) ->
    (x - mean) / std -> the network's logits. All differentiable: attacks see the same model."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: list[float], std: list[float], input_size: list[int] | None = None):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.size = list(input_size[-2:]) if input_size else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.shape[1] == 1 and x.shape[1] == 3:
            x = v2.functional.rgb_to_grayscale(x)  # (B, 1, H, W): ITU-R 601 luma, as decoding in greyscale
        if self.size and list(x.shape[-2:]) != self.size:
            x = v2.functional.resize(x, self.size, antialias=True)
        return self.net((x - self.mean) / self.std)  # (B, C, H, W) -> (B, num_classes)


@dataclass
class Classifier:
    net: Normalised
    num_classes: int
    class_names: list[str] | None
    source: str


def _from_backbone(name: str) -> Classifier:
    try:
        bb = load_backbone(name, download=False)  # torchvision weights only from the hub cache: no surprise downloads
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        raise ConfigError([f"MODEL {name}: {str(e).splitlines()[0]}"]) from e
    if bb.num_classes == 0:
        raise ConfigError([f"MODEL {name}: a backbone without a classification head (export it with --with-head)"])
    if bb.meta.mean is None or bb.meta.std is None:
        raise ConfigError([f"MODEL {name}: its weights do not say their normalisation (mean/std)"])
    return Classifier(Normalised(bb.eval(), bb.meta.mean, bb.meta.std), bb.num_classes, bb.meta.class_names, name)


def _wrap(net: nn.Module, info: dict[str, Any], source: Path, where: str) -> Classifier:
    """An export's model.json or a checkpoint's export info -> Classifier (head and normalisation checked)."""
    names = info.get("class_names")
    if not names or info.get("kind") == "backbone" and not info.get("with_head", True):
        raise ConfigError([f"MODEL {source}: no classification head (no class_names in {where})"])
    if info.get("mean") is None or info.get("std") is None:
        raise ConfigError([f"MODEL {source}: {where} has no mean/std normalisation"])
    return Classifier(Normalised(net.eval(), info["mean"], info["std"], info.get("input_size")), len(names),
                      list(names), str(source))


def _from_export(directory: Path) -> Classifier:
    net, info = load_exported(directory)
    return _wrap(net, info, directory, MODEL_JSON)


def _from_checkpoint(source: Path) -> Classifier:
    """A classify or transfer run directory (its best checkpoint) or one .ckpt; the network is rebuilt from
    the spec and export info the checkpoint records (older checkpoints: a ConfigError saying to export)."""
    ck = network_from_checkpoint(source)
    return _wrap(ck.model, ck.info, source, f"the export info of {ck.path.name}")


def load_classifier(model: str) -> Classifier:
    """Backbone name, export directory, run directory or .ckpt -> Classifier; anything else is a one-line
    ConfigError."""
    path = Path(model)
    if path.is_dir():
        if (path / MODEL_JSON).is_file():
            return _from_export(path)
        if (path / CONFIG_FILE).is_file() or (path / "checkpoints").is_dir():
            return _from_checkpoint(path)
        raise ConfigError([f"MODEL {path}: neither an export directory ({MODEL_JSON}) nor a run directory"])
    if path.is_file() and path.suffix == ".ckpt":
        return _from_checkpoint(path)
    if "/" in model or path.suffix == ".ckpt":
        raise ConfigError([f"MODEL {model}: no such export directory, run directory or checkpoint"])
    return _from_backbone(model)
