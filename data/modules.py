"""The one LightningDataModule: shard sets under `data.root`, decoded by a family's functions.

A family passes `decode={"train": f, "eval": g}` (picklable callables, raw sample -> dict of tensors);
the module reads the manifests, knows its rank from the Trainer, and builds the training stream and the
exact-once evaluation streams. The test stage uses `test/` when present, else `val/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, default_collate

from vislab.core.config import RunConfig
from vislab.data.manifest import MANIFEST, Manifest, check_shard_set, sha256_file, split_dirs
from vislab.data.pipeline import (
    Collate,
    Decode,
    EvalStream,
    StreamLoader,
    TrainStream,
    epoch_batches,
    loader_kwargs,
)


class ShardDataModule(pl.LightningDataModule):
    def __init__(self, cfg: RunConfig, decode: dict[str, Decode], collate: Collate = default_collate):
        super().__init__()
        self.cfg = cfg
        self.decode = decode
        self.collate = collate
        self.dirs = split_dirs(cfg.data.root)
        self.manifests: dict[str, Manifest] = {s: check_shard_set(d) for s, d in self.dirs.items()}
        self._train: StreamLoader | None = None
        self._resume_position: dict[str, int] | None = None

    # ----- facts for the model (class names, sessions, statistics) -----
    @property
    def meta(self) -> dict[str, Any]:
        return self.manifests["train"].meta if "train" in self.manifests else next(iter(self.manifests.values())).meta

    @property
    def test_split(self) -> str:
        return "test" if "test" in self.dirs else "val"

    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def train_batches_per_rank(self) -> int:
        m = self.manifests["train"]
        n = min(m.num_samples, self.cfg.data.limit_train_samples or m.num_samples)
        return epoch_batches(n, self.cfg.world_size, self.cfg.per_rank_batch_size())

    def train_dataloader(self) -> StreamLoader:
        rank, _ = self._rank()
        m = self.manifests["train"]
        stream = TrainStream(
            urls=m.urls(self.dirs["train"]),
            counts=[s.count for s in m.shards],
            decode=self.decode["train"],
            batch_size=self.cfg.per_rank_batch_size(),
            batches_per_rank=self.train_batches_per_rank(),
            seed=self.cfg.seed,
            rank=rank,
            shuffle_buffer=self.cfg.data.shuffle_buffer,
            on_error=self.cfg.data.on_error,
            collate=self.collate,
        )
        self._train = StreamLoader(stream, self.cfg.data.num_workers, pin_memory=torch.cuda.is_available())
        if self._resume_position is not None:
            self._train.load_state_dict(self._resume_position)
            self._resume_position = None
        return self._train

    # ----- the training stream's position travels in checkpoints as this module's state -----
    # (Lightning 2.6 restores a datamodule before `configure_optimizers` builds and iterates the training loader
    # to count its steps; the loader's own state would only be loaded after that, i.e. never take effect)
    def state_dict(self) -> dict[str, Any]:
        return {"train_position": self._train.state_dict()} if self._train is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_position = state_dict.get("train_position")

    def eval_loader(self, split: str, rank: int | None = None, world_size: int | None = None) -> DataLoader:
        r, w = self._rank()
        m = self.manifests[split]
        stream = EvalStream(
            urls=m.urls(self.dirs[split]),
            counts=[s.count for s in m.shards],
            decode=self.decode["eval"],
            batch_size=self.cfg.per_rank_eval_batch_size(),
            rank=r if rank is None else rank,
            world_size=w if world_size is None else world_size,
            on_error=self.cfg.data.on_error,
            collate=self.collate,
        )
        return DataLoader(stream, **loader_kwargs(self.cfg.data.num_workers, torch.cuda.is_available()))

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.test_split)

    def manifest_hashes(self) -> dict[str, str]:
        return {s: sha256_file(Path(d) / MANIFEST) for s, d in self.dirs.items()}
