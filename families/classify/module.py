"""Image classification (`task: classify`): any registered architecture with the modern recipe.

Recipe: SGD+Nesterov or AdamW, no decay on norms/biases, warmup + cosine/step (models/optim.py); label
smoothing; mixup/cutmix and RandAugment (torchvision.transforms.v2); EMA, precision, channels_last and
compile come from the trainer config. Metrics are torchmetrics, synced across ranks at epoch end.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms import v2

from vislab.data.images import ImageDecode, PixelNormalise
from vislab.data.modules import ShardDataModule
from vislab.families.classify.schema import ClassifyConfig
from vislab.models.base import VislabModule
from vislab.models.exported import build_from_spec


def datamodule(cfg: ClassifyConfig) -> ShardDataModule:
    d = cfg.data
    common = {"grayscale": d.grayscale}
    train = ImageDecode(train=True, crop=d.train_crop, min_scale=d.min_scale, hflip=d.hflip,
                        randaugment_ops=d.randaugment_ops, randaugment_magnitude=d.randaugment_magnitude, **common)
    evaluate = ImageDecode(train=False, crop=d.eval_crop, resize=d.eval_resize, **common)
    return ShardDataModule(cfg, {"train": train, "eval": evaluate})


def model_spec(cfg: ClassifyConfig, meta: dict[str, Any]) -> dict[str, Any]:
    """How to rebuild the bare network without Lightning (stored in exports' model.json)."""
    kwargs: dict[str, Any] = {"name": cfg.model.name, "num_classes": cfg.model.num_classes,
                              "in_channels": 1 if cfg.data.grayscale else 3}
    if cfg.model.dropout is not None:
        kwargs["dropout"] = cfg.model.dropout
    return {"builder": "create_model", "kwargs": kwargs}


def bare_model(cfg: ClassifyConfig, meta: dict[str, Any]) -> nn.Module:
    return build_from_spec(model_spec(cfg, meta))


def export_info(cfg: ClassifyConfig, meta: dict[str, Any]) -> dict[str, Any]:
    d = cfg.data
    return {
        "architecture": cfg.model.name,
        "num_classes": cfg.model.num_classes,
        "class_names": meta.get("classes"),
        "input_size": [len(d.mean), d.eval_crop, d.eval_crop],
        "mean": d.mean,
        "std": d.std,
        "preprocess": {"resize": d.eval_resize, "center_crop": d.eval_crop, "scale": "pixels / 255"},
    }


def example_input(cfg: ClassifyConfig, info: dict[str, Any], batch_size: int) -> torch.Tensor:
    """First evaluation images of the run's shards, normalised as the model expects."""
    dm = datamodule(cfg)
    batch = next(iter(dm.eval_loader("val" if "val" in dm.dirs else dm.test_split, rank=0, world_size=1)))
    x = batch["image"][:batch_size].float()
    mean = torch.tensor(cfg.data.mean).view(1, -1, 1, 1) * 255
    std = torch.tensor(cfg.data.std).view(1, -1, 1, 1) * 255
    return (x - mean) / std


def module(cfg: ClassifyConfig, meta: dict[str, Any]) -> ClassifierModule:
    return ClassifierModule(cfg, meta)


class ClassifierModule(VislabModule):
    cfg: ClassifyConfig
    metrics: nn.ModuleDict

    def __init__(self, cfg: ClassifyConfig, meta: dict[str, Any] | None = None):
        super().__init__(cfg, meta)
        self.model = bare_model(cfg, self.meta)
        n = cfg.model.num_classes
        self.normalise = PixelNormalise(cfg.data.mean, cfg.data.std, cfg.trainer.channels_last)
        self.mix = self._mixer(cfg, n)
        top5 = min(5, n)
        self.metrics = nn.ModuleDict({
            split: nn.ModuleDict({
                "acc1": MulticlassAccuracy(n, top_k=1, average="micro"),
                "acc5": MulticlassAccuracy(n, top_k=top5, average="micro"),
                "loss": MeanMetric(),
            }) for split in ("val", "test")
        })

    @staticmethod
    def _mixer(cfg: ClassifyConfig, num_classes: int) -> v2.Transform | None:
        d = cfg.data
        mixers: list[v2.Transform] = []
        if d.mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=d.mixup_alpha, num_classes=num_classes))
        if d.cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=d.cutmix_alpha, num_classes=num_classes))
        return v2.RandomChoice(mixers) if mixers else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        x = batch["image"] = self.normalise(batch["image"])  # uint8 (B, C, H, W) -> float, on the device
        if self.trainer.training and self.mix is not None:
            batch["image"], batch["target"] = self.mix(x, batch["label"])
        return batch

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        target = batch.get("target", batch["label"])  # soft labels under mixup/cutmix
        loss = F.cross_entropy(logits, target, label_smoothing=self.cfg.model.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        if "target" not in batch:
            self.log("train/acc1", (logits.argmax(1) == batch["label"]).float().mean())
        return loss

    def _eval_step(self, batch: dict[str, Any], split: str) -> None:
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"], reduction="none")
        m: Any = self.metrics[split]
        m["acc1"].update(logits, batch["label"])
        m["acc5"].update(logits, batch["label"])
        m["loss"].update(loss)
