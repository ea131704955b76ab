"""The classifier under test: a pretrained backbone name or a vislab export, wrapped to take [0, 1] pixels.

    clf = load_classifier("efficientnet_lite0")        # offline ImageNet weights, its TF normalisation
    clf = load_classifier("exports/my-run")            # `vislab export RUN --out exports/my-run`
    logits = clf.net(x)                                # x: (B, 3, H, W) in [0, 1]; normalisation inside

The normalisation lives inside `clf.net`, so degradations and adversarial perturbations are both defined in
[0, 1] pixel space (Foolbox's `bounds=(0, 1)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vislab.core.errors import ConfigError
from vislab.models.backbones import load_backbone
from vislab.models.exported import MODEL_JSON, load_exported


class Normalised(nn.Module):
    """[0, 1] pixels -> (x - mean) / std -> the network's logits."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)  # (B, 3, H, W) -> (B, num_classes)


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


def _from_export(directory: Path) -> Classifier:
    net, info = load_exported(directory)
    names = info.get("class_names")
    if not names or info.get("kind") == "backbone" and not info.get("with_head", True):
        raise ConfigError([f"MODEL {directory}: the export has no classification head (no class_names in {MODEL_JSON})"])
    if info.get("mean") is None or info.get("std") is None:
        raise ConfigError([f"MODEL {directory}: {MODEL_JSON} has no mean/std normalisation"])
    return Classifier(Normalised(net.eval(), info["mean"], info["std"]), len(names), list(names), str(directory))


def load_classifier(model: str) -> Classifier:
    """Backbone name or export directory -> Classifier; anything else is a one-line ConfigError."""
    path = Path(model)
    if path.is_dir():
        if (path / MODEL_JSON).is_file():
            return _from_export(path)
        if (path / "config.yaml").is_file():
            raise ConfigError([f"MODEL {path}: a run directory; export it first (`vislab export {path} --out DIR`) "
                               "and pass the export directory"])
        raise ConfigError([f"MODEL {path}: neither an export directory ({MODEL_JSON}) nor a run directory"])
    if "/" in model:
        raise ConfigError([f"MODEL {model}: no such export directory"])
    return _from_backbone(model)
