"""Frozen-backbone features extracted once into shards: the linear probe's fast path.

`<cache>/<key>/{train,val,test}/` mirror the image shard sets one shard for one shard; each sample is
`{"npy": float32 (num_features,), "cls": label}` under the image's key. The key hashes everything the
features depend on (architecture, weights, preprocessing, the image manifests' hashes), so a changed
input gets a new cache and an unchanged one is reused. Extraction is resumable (`write_shard_set` keeps
finished shards); under DDP rank 0 extracts and the other ranks wait for `complete.json`.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vislab.data.manifest import MANIFEST, ShardError, check_shard_set, sha256_file, split_dirs
from vislab.data.pipeline import _SkipStats, read_shard
from vislab.data.shards import write_shard_set

FEATURE_FORMAT = 1
COMPLETE = "complete.json"


def cache_dir(cache_root: str | Path, image_root: str | Path, spec: dict[str, Any]) -> Path:
    """`<cache_root>/<key>`: the key covers `spec` and the image shard manifests."""
    manifests = {s: sha256_file(Path(d) / MANIFEST) for s, d in split_dirs(image_root).items()}
    blob = json.dumps({"format": FEATURE_FORMAT, "spec": spec, "manifests": manifests}, sort_keys=True)
    return Path(cache_root) / hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class ShardFeatures:
    """`encode` for write_shard_set: item (shard index, shard hash, sample index) -> feature sample.

    The first item of a shard runs the backbone over the whole shard; the others are served from memory."""

    urls: list[str]
    counts: list[int]
    decode: Callable[[dict[str, Any]], dict[str, Any]]
    backbone: Callable[[], nn.Module]
    mean: list[float]
    std: list[float]
    batch_size: int = 64
    _shard: int = -1
    _samples: list[dict[str, Any]] = field(default_factory=list)
    _model: nn.Module | None = None

    @torch.inference_mode()
    def _extract(self, index: int) -> None:
        if self._model is None:
            self._model = self.backbone().eval().to(memory_format=torch.channels_last)
        raw = list(read_shard(self.urls[index], self.counts[index], "raise", _SkipStats()))
        decoded = [self.decode(s) for s in raw]
        mean = torch.tensor(self.mean).view(1, -1, 1, 1) * 255
        std = torch.tensor(self.std).view(1, -1, 1, 1) * 255
        feats = []
        for i in range(0, len(decoded), self.batch_size):
            x = torch.stack([d["image"] for d in decoded[i:i + self.batch_size]]).float()
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)  # (B, 3, H, W)
            m = self._model
            feats.append(m.forward_head(m.forward_features(x), pre_logits=True).float().numpy())  # type: ignore[operator]
        array = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
        self._samples = [{"__key__": d["key"], "npy": array[i].astype(np.float32), "cls": int(d["label"])}
                         for i, d in enumerate(decoded)]
        self._shard = index

    def __call__(self, item: tuple[int, str, int]) -> dict[str, Any]:
        index, _, j = item
        if index != self._shard:
            self._extract(index)
        return self._samples[j]


def extract_features(image_root: str | Path, out: Path, *, decode: Callable[[dict[str, Any]], dict[str, Any]],
                     backbone: Callable[[], nn.Module], mean: list[float], std: list[float], spec: dict[str, Any],
                     batch_size: int = 64, log: Callable[[str], None] = print) -> Path:
    """Write the feature shard sets of every split of `image_root` under `out` (skipping finished work)."""
    t0 = time.time()
    for split, d in split_dirs(image_root).items():
        m = check_shard_set(d)
        plans = [[(i, s.sha256[:16], j) for j in range(s.count)] for i, s in enumerate(m.shards)]
        encode = ShardFeatures(m.urls(d), [s.count for s in m.shards], decode, backbone, mean, std, batch_size)
        write_shard_set(out / split, plans, encode, workers=1, source=str(Path(d).resolve()),
                        meta={**m.meta, "features": spec}, split=split, log=log)
    (out / COMPLETE).write_text(json.dumps({"spec": spec, "seconds": round(time.time() - t0, 1)}, indent=1))
    return out


def wait_for_features(out: Path, timeout_s: float, poll_s: float = 2.0) -> Path:
    """Other ranks: wait until rank 0 has written the cache (fails after `timeout_s`, naming the directory)."""
    deadline = time.time() + timeout_s
    while not (out / COMPLETE).is_file():
        if time.time() > deadline:
            raise ShardError(f"feature cache {out} not complete after {timeout_s:.0f} s (rank 0 extracting?)")
        time.sleep(poll_s)
    return out


@dataclass
class FeatureDecode:
    """Picklable decode of a feature sample: {'features': (D,) float32, 'label': int, 'key': str}."""

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        features = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
        return {"features": torch.from_numpy(features), "label": int(sample["cls"]), "key": sample["__key__"]}

