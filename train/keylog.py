"""`logger.sample_keys=true`: which samples every rank trained on, step by step.

One line per training batch in `<run_dir>/sample_keys/rank<R>.txt`: `<global step> <key> <key> ...`,
appended, so a run that was preempted and resumed shows both attempts in one file. This is how the
Slurm tests prove that a resumed epoch continues where it stopped (nothing lost, nothing repeated).
Needs the family's decode to pass `key` through (the image families do).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, TextIO

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

KEYS_DIR = "sample_keys"


class SampleKeyLog(Callback):
    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / KEYS_DIR
        self._file: TextIO | None = None
        self._warned = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.dir / f"rank{trainer.global_rank}.txt", "a", buffering=1)  # line-buffered

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        keys = batch.get("key") if isinstance(batch, dict) else None
        if keys is None:
            if not self._warned:
                warnings.warn("logger.sample_keys=true but the batches carry no 'key' field: nothing logged",
                              stacklevel=2)
                self._warned = True
            return
        if self._file is not None:
            # trainer.global_step already counts this batch's optimizer step
            self._file.write(f"{trainer.global_step} {' '.join(map(str, keys))}\n")

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()


def read_sample_keys(run_dir: Path) -> dict[int, list[tuple[int, list[str]]]]:
    """{rank: [(global step, [keys of that batch]), ...]} in the order they were trained on."""
    out: dict[int, list[tuple[int, list[str]]]] = {}
    for path in sorted((Path(run_dir) / KEYS_DIR).glob("rank*.txt")):
        rank = int(path.stem.removeprefix("rank"))
        rows = []
        for line in path.read_text().splitlines():
            step, *keys = line.split()
            rows.append((int(step), keys))
        out[rank] = rows
    return out
