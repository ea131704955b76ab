"""Transfer learning (`task: transfer`): a pretrained backbone with a new head, probed or fine-tuned.

Linear probe (`model.mode: probe`): the backbone is frozen in eval mode and only the classifier on its
pre-logit features trains. Fast path (`model.cache_features: true`): the features are extracted once into
shards (`vislab.data.features`) and the head trains on them in seconds per epoch; slow path: the same
head end to end on images, with the same (evaluation) preprocessing, so both reach the same accuracy.

Fine-tuning (`model.mode: finetune`): per-group learning rates through `param_groups()` ("lr_scale": head
1x, `model.lr_groups` e.g. the top blocks 1/10, the rest `backbone_lr_scale` e.g. 1/100), parameters frozen
by name pattern (their BatchNorm layers stay in eval mode), optional gradual unfreezing (ULMFiT, Howard &
Ruder 2018) and a head initialised from a probe (LP-FT, Kumar et al. 2022, arXiv 2202.10054).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from vislab.core.checkpoints import load_checkpoint, model_state
from vislab.core.dist import global_rank
from vislab.core.errors import ConfigError
from vislab.data.features import cached_features, weights_identity
from vislab.data.images import ImageDecode, PixelNormalise, normalise
from vislab.data.modules import ShardDataModule
from vislab.data.pipeline import Decode
from vislab.families.transfer.schema import TransferConfig, resolved_image_sizes
from vislab.models.backbone_config import resolved_normalisation
from vislab.models.backbones import Backbone, configured_backbone
from vislab.models.base import VislabModule
from vislab.models.exported import load_weights
from vislab.models.optim import ParamGroup
from vislab.models.pretrained import WeightsMeta, describe_weights

HEAD = ("classifier.", "pre_logits.")


def preprocessing(cfg: TransferConfig) -> dict[str, Any]:
    """Normalisation and sizes actually used: the weights' unless they do not say (see the schema)."""
    meta = describe_weights(cfg.model.backbone.name, cfg.model.backbone.weights)
    mean, std = resolved_normalisation(cfg.data, meta)
    return {"mean": mean, "std": std, **resolved_image_sizes(cfg.data, meta)}


def image_decoders(cfg: TransferConfig, pre: dict[str, Any]) -> dict[str, Decode]:
    d = cfg.data
    evaluate = ImageDecode(train=False, crop=pre["eval_crop"], resize=pre["eval_resize"])
    train = ImageDecode(train=True, crop=pre["train_crop"], min_scale=d.min_scale, hflip=d.hflip,
                        randaugment_ops=d.randaugment_ops, randaugment_magnitude=d.randaugment_magnitude)
    return {"train": train if d.augment else evaluate, "eval": evaluate}


def uses_feature_cache(cfg: TransferConfig) -> bool:
    return cfg.model.mode == "probe" and cfg.model.cache_features


def datamodule(cfg: TransferConfig) -> ShardDataModule:
    pre = preprocessing(cfg)
    if not uses_feature_cache(cfg):
        return ShardDataModule(cfg, image_decoders(cfg, pre))
    root = feature_root(cfg, pre)
    feature_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(root)))
    return ShardDataModule(feature_cfg, {"train": FeatureDecode(), "eval": FeatureDecode()})


def feature_root(cfg: TransferConfig, pre: dict[str, Any]) -> Path:
    """The cached pre-logit features of this backbone + preprocessing + data (computed by rank 0 if missing)."""

    b = cfg.model.backbone
    spec = {"architecture": b.name, "weights": weights_identity(b.weights, cfg.seed), "key_map": dict(b.key_map),
            "eval_crop": pre["eval_crop"], "eval_resize": pre["eval_resize"], "mean": pre["mean"], "std": pre["std"],
            "features": "pre_logits"}

    def compute() -> PreLogits:
        def backbone() -> Backbone:
            return configured_backbone(b, num_classes=0, seed=cfg.seed)

        return PreLogits(image_decoders(cfg, pre)["eval"], backbone, pre["mean"], pre["std"],
                         cfg.per_rank_eval_batch_size())

    return cached_features(cfg.data.root, cfg.model.feature_cache, spec, compute, rank=global_rank(),
                           timeout_s=cfg.trainer.ddp_timeout_s * 4)


@dataclass
class PreLogits:
    """Raw image samples of one shard -> {'npy': float32 (num_features,), 'cls': label} (feature cache)."""

    decode: Decode
    backbone: Callable[[], Backbone]
    mean: list[float]
    std: list[float]
    batch_size: int = 64
    _model: Backbone | None = None

    @torch.inference_mode()
    def __call__(self, raw: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
        if self._model is None:
            self._model = self.backbone().eval().to(memory_format=torch.channels_last)
        decoded = [self.decode(s) for s in raw]
        out: list[dict[str, Any]] = []
        for i in range(0, len(decoded), self.batch_size):
            chunk = decoded[i:i + self.batch_size]
            x = normalise(torch.stack([d["image"] for d in chunk]), self.mean, self.std)  # (B, 3, H, W)
            x = x.contiguous(memory_format=torch.channels_last)
            feats = self._model.forward_head(self._model.forward_features(x), pre_logits=True).float().numpy()
            out.extend({"__key__": d["key"], "npy": f, "cls": int(d["label"])}
                       for d, f in zip(chunk, feats, strict=True))
        return out


@dataclass
class FeatureDecode:
    """Picklable decode of a cached feature sample: {'features': (D,) float32, 'label': int, 'key': str}."""

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        features = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
        return {"features": torch.from_numpy(features), "label": int(sample["cls"]), "key": sample["__key__"]}


# --------------------------------------------------------------------------------------- export hooks
def num_classes_of(cfg: TransferConfig, meta: dict[str, Any]) -> int:
    return int(cfg.model.num_classes or meta.get("num_classes") or len(meta.get("classes") or []))


def model_spec(cfg: TransferConfig, meta: dict[str, Any]) -> dict[str, Any]:
    return {"builder": "backbone",
            "kwargs": {"name": cfg.model.backbone.name, "num_classes": num_classes_of(cfg, meta)}}


def export_info(cfg: TransferConfig, meta: dict[str, Any]) -> dict[str, Any]:
    pre = meta.get("preprocess") or preprocessing(cfg)
    weights = WeightsMeta.from_dict(meta.get("weights") or {})
    return {
        "architecture": cfg.model.backbone.name,
        "num_classes": num_classes_of(cfg, meta),
        "class_names": weights.class_names if cfg.model.keep_head else meta.get("classes"),
        "input_size": [3, pre["eval_crop"], pre["eval_crop"]],
        "mean": pre["mean"],
        "std": pre["std"],
        "preprocess": {"resize": pre["eval_resize"], "center_crop": pre["eval_crop"], "scale": "pixels / 255"},
        "backbone_weights": weights.source,
        "backbone_provenance": weights.provenance,
    }


def example_input(cfg: TransferConfig, info: dict[str, Any], batch_size: int) -> torch.Tensor:
    """First validation images (never cached features), normalised as the model expects."""
    pre = {"mean": info["mean"], "std": info["std"], "eval_crop": info["input_size"][-1],
           "eval_resize": info["preprocess"]["resize"], "train_crop": info["input_size"][-1]}
    dm = ShardDataModule(cfg, image_decoders(cfg, pre))
    batch = next(iter(dm.eval_loader("val" if "val" in dm.dirs else dm.test_split, rank=0, world_size=1)))
    return normalise(batch["image"][:batch_size], pre["mean"], pre["std"])


def module(cfg: TransferConfig, meta: dict[str, Any]) -> TransferModule:
    return TransferModule(cfg, meta)


# ------------------------------------------------------------------------------------------- module
class TransferModule(VislabModule):
    def __init__(self, cfg: TransferConfig, meta: dict[str, Any] | None = None):
        super().__init__(cfg, meta)
        m = cfg.model
        n = num_classes_of(cfg, self.meta)
        b = m.backbone
        self.model: Backbone = configured_backbone(b, num_classes=None if m.keep_head else n, seed=cfg.seed)
        pre = preprocessing(cfg)
        self.meta.update({"weights": self.model.meta.to_dict(), "preprocess": pre, "num_classes": n})
        self.normalise = PixelNormalise(pre["mean"], pre["std"], cfg.trainer.channels_last)
        if m.head_init:
            load_head(self.model, Path(m.head_init))
        self.frozen = self._frozen_names()
        self.model.requires_grad_(True)
        for name, p in self.model.named_parameters():
            p.requires_grad_(name not in self.frozen)
        self._apply_eval_modes()
        self.metrics = nn.ModuleDict({split: nn.ModuleDict({
            "acc1": MulticlassAccuracy(n, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(n, top_k=min(5, n), average="micro"),
            "loss": MeanMetric()}) for split in ("val", "test")})

    # ----- which parameters train, and how fast -----
    def _frozen_names(self) -> set[str]:
        """Parameters that never train: the whole backbone of a probe, `model.freeze` patterns otherwise."""
        m = self.cfg.model
        names = [n for n, _ in self.model.named_parameters()]
        if m.mode == "probe":
            return {n for n in names if not n.startswith("classifier.")}
        return {n for n in names if not n.startswith(HEAD) and any(fnmatch(n, p) for p in m.freeze)}

    def group_of(self, name: str) -> int:
        """-1 = head; i = model.lr_groups[i]; len(lr_groups) = the rest of the backbone."""
        if name.startswith(HEAD):
            return -1
        groups = self.cfg.model.lr_groups
        return next((i for i, g in enumerate(groups) if any(fnmatch(name, p) for p in g.layers)), len(groups))

    def param_groups(self) -> list[ParamGroup]:
        m, o = self.cfg.model, self.cfg.optim
        scales = {-1: 1.0, len(m.lr_groups): m.backbone_lr_scale, **{i: g.lr_scale for i, g in enumerate(m.lr_groups)}}
        buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            if name in self.frozen:
                continue
            no_decay = o.no_decay_norm_bias and p.ndim <= 1
            buckets.setdefault((self.group_of(name), no_decay), []).append(p)
        return [{"params": ps, "lr_scale": scales[g], "weight_decay": 0.0 if nd else o.weight_decay,
                 "name": f"{'head' if g < 0 else f'group{g}'}_{'no_decay' if nd else 'decay'}"}
                for (g, nd), ps in sorted(buckets.items())]

    def unfrozen_groups(self, epoch: int) -> int:
        """Gradual unfreezing: how many backbone groups (from the top) train at `epoch`."""
        steps = self.cfg.model.gradual_unfreeze
        return len(self.cfg.model.lr_groups) + 1 if not steps else sum(epoch >= e for e in steps)

    def on_train_epoch_start(self) -> None:
        # Lightning keeps each submodule's mode as it finds it (it does not call train() on us every
        # epoch), so the frozen parts are put into eval mode here, after this epoch's unfreezing
        if self.cfg.model.mode == "finetune" and self.cfg.model.gradual_unfreeze:
            k = self.unfrozen_groups(self.current_epoch)
            for name, p in self.model.named_parameters():  # groups are numbered top first, the rest last
                p.requires_grad_(name not in self.frozen and self.group_of(name) < k)
        self._apply_eval_modes()

    def setup(self, stage: str) -> None:
        # Parameters that stop or start receiving gradients after DDP wrapped the model must be allowed to
        # be unused; this hook runs before the strategy wraps the model.
        if stage == "fit" and self.cfg.model.gradual_unfreeze and self.trainer.world_size > 1:
            self.trainer.strategy._ddp_kwargs["find_unused_parameters"] = True  # type: ignore[attr-defined]

    def train(self, mode: bool = True) -> TransferModule:
        super().train(mode)
        if mode:
            self._apply_eval_modes()
        return self

    def _apply_eval_modes(self) -> None:
        """Frozen parts run in eval mode: BatchNorm keeps the pretraining statistics, dropout is off."""
        if self.cfg.model.mode == "probe":
            self.model.body.eval()
            self.model.pre_logits.eval()
            return
        for mod in self.model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                params = list(mod.parameters())
                if self.cfg.model.freeze_bn or (params and not any(p.requires_grad for p in params)):
                    mod.eval()

    # ----- steps -----
    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        if "image" in batch:  # uint8 (B, 3, H, W) -> normalised float, on the device
            batch["image"] = self.normalise(batch["image"])
        return batch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _logits(self, batch: dict[str, Any]) -> torch.Tensor:
        if "features" in batch:  # fast path: cached pre-logits (B, num_features)
            return self.model.classifier(batch["features"])
        if self.cfg.model.mode == "probe":  # slow path: the same head on features computed now
            with torch.no_grad():
                features = self.model.forward_head(self.model.forward_features(batch["image"]), pre_logits=True)
            return self.model.classifier(features)
        return self.model(batch["image"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self._logits(batch)
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.cfg.model.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc1", (logits.argmax(1) == batch["label"]).float().mean())
        return loss

    def _eval_step(self, batch: dict[str, Any], split: str) -> None:
        logits = self._logits(batch)
        m: Any = self.metrics[split]
        m["acc1"].update(logits, batch["label"])
        m["acc5"].update(logits, batch["label"])
        m["loss"].update(F.cross_entropy(logits, batch["label"], reduction="none"))


def load_head(backbone: Backbone, source: Path) -> None:
    """Copy the classifier of another transfer run (its export directory or a checkpoint) into `backbone`."""
    if source.is_dir():

        state = load_weights(source)
    else:

        state = model_state(load_checkpoint(source)["state_dict"])
    head = {k[len("classifier."):]: v for k, v in state.items() if k.startswith("classifier.")}
    own = backbone.classifier.state_dict()
    bad = [f"classifier.{k} {tuple(head[k].shape) if k in head else 'missing'} vs {tuple(v.shape)}"
           for k, v in own.items() if k not in head or head[k].shape != v.shape]
    if bad:
        raise ConfigError([f"model.head_init={source}: head does not fit: {'; '.join(bad)}"])
    backbone.classifier.load_state_dict(head)
