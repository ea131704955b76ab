"""Image samples: decode JPEG/PNG bytes and apply the torchvision.transforms.v2 recipe, in loader workers.

Batches stay uint8 (4x less to copy and pin); normalisation, mixup/cutmix and channels_last happen on the
device in the LightningModule (`on_after_batch_transfer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from vislab.data.manifest import ShardError

IMAGE_FIELDS = ("jpg", "jpeg", "png")


class PixelNormalise(nn.Module):
    """uint8-range pixels (B, C, H, W) -> the network's input (pixels / 255 - mean) / std, as float on the
    pixels' device (optionally channels_last). The one place every family turns pixels into inputs."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: list[float], std: list[float], channels_last: bool = False):
        super().__init__()
        # non-persistent: checkpoints carry the statistics in their config and meta, not as tensors
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255, persistent=False)
        self.channels_last = channels_last

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def normalise(pixels: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """`PixelNormalise` once (feature extraction, example inputs)."""
    return PixelNormalise(mean, std).to(pixels.device)(pixels)


def image_bytes(sample: dict[str, Any]) -> bytes:
    for f in IMAGE_FIELDS:
        if f in sample:
            return sample[f]
    raise ShardError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no image field ({', '.join(IMAGE_FIELDS)})")


def decode_bytes(data: bytes, grayscale: bool = False, where: str = "") -> torch.Tensor:
    """(C, H, W) uint8 tensor from encoded image bytes (libjpeg-turbo / libpng via torchvision.io)."""
    try:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                             mode=ImageReadMode.GRAY if grayscale else ImageReadMode.RGB)
    except RuntimeError as e:
        raise ShardError(f"cannot decode image {where}: {e}") from e
    if image.dtype == torch.uint16:  # 16-bit PNGs (shards written before the importer made them 8-bit)
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


@dataclass
class ImageDecode:
    """Picklable decode step for classification samples ({'jpg'|'png': bytes, 'cls': int})."""

    train: bool
    crop: int = 224
    resize: int = 256
    min_scale: float = 0.08
    hflip: bool = True
    randaugment_ops: int = 0
    randaugment_magnitude: int = 9
    grayscale: bool = False
    _transform: Any = field(default=None, init=False, repr=False, compare=False)

    def transform(self) -> v2.Transform:
        if self._transform is None:
            if self.train:
                t: list[v2.Transform] = [v2.RandomResizedCrop(self.crop, scale=(self.min_scale, 1.0), antialias=True)]
                if self.hflip:
                    t.append(v2.RandomHorizontalFlip())
                if self.randaugment_ops:
                    t.append(v2.RandAugment(self.randaugment_ops, self.randaugment_magnitude))
            else:
                t = [v2.Resize(self.resize, antialias=True), v2.CenterCrop(self.crop)]
            self._transform = v2.Compose(t)
        return self._transform

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        where = f"{sample.get('__key__')} in {sample.get('__url__')}"
        image = decode_bytes(image_bytes(sample), self.grayscale, where)
        return {"image": self.transform()(image), "label": int(sample["cls"]), "key": sample["__key__"]}
