"""The reader: exact-once evaluation, equal epochs per rank, seeded and resumable training streams."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vislab.data.manifest import Manifest
from vislab.data.pipeline import EvalStream, StreamLoader, TrainStream, decode_fields, epoch_batches
from vislab.data.shards import write_shard_set


def _encode(i: int) -> dict:
    return {"__key__": f"k{i:05d}", "npy": np.array([i], dtype=np.int64)}


def _decode(sample: dict) -> dict:
    return {"key": sample["__key__"]}


def _shards(tmp_path: Path, sizes: list[int]) -> tuple[list[str], list[int]]:
    plans, start = [], 0
    for n in sizes:
        plans.append(list(range(start, start + n)))
        start += n
    m = write_shard_set(tmp_path, plans, _encode, log=lambda s: None)
    return m.urls(tmp_path), [s.count for s in m.shards]


def _keys(batches) -> list[str]:
    return [k for b in batches for k in b["key"]]


@pytest.mark.parametrize("sizes", [[7, 13, 2, 9, 11, 5], [40], [3, 30]], ids=["many-shards", "one-shard", "two-shards"])
def test_eval_sees_every_sample_once_across_2_ranks_x_2_workers(tmp_path: Path, sizes: list[int]) -> None:
    urls, counts = _shards(tmp_path, sizes)
    seen: Counter[str] = Counter()
    for rank in range(2):
        stream = EvalStream(urls, counts, _decode, batch_size=4, rank=rank, world_size=2)
        seen.update(_keys(DataLoader(stream, batch_size=None, num_workers=2)))
    assert sorted(seen) == [f"k{i:05d}" for i in range(sum(sizes))]
    assert set(seen.values()) == {1}


def _train(urls: list[str], counts: list[int], rank: int, **kw) -> TrainStream:
    args = {"decode": _decode, "batch_size": 4, "seed": 3, "shuffle_buffer": 8}
    return TrainStream(urls, counts, rank=rank, **{**args, **kw})


def test_every_rank_gets_the_same_number_of_batches(tmp_path: Path) -> None:
    urls, counts = _shards(tmp_path, [50, 3, 1])  # very uneven shards
    n = epoch_batches(sum(counts), world_size=2, batch_size=4)
    lengths = [len(list(DataLoader(_train(urls, counts, r, batches_per_rank=n), batch_size=None, num_workers=w)))
               for r in range(2) for w in (0, 3)]
    assert lengths == [n] * 4 and n == 7


def test_streams_are_seeded_by_epoch_and_rank(tmp_path: Path) -> None:
    urls, counts = _shards(tmp_path, [20, 20, 20])
    run = lambda **kw: _keys(DataLoader(_train(urls, counts, batches_per_rank=6, **kw), batch_size=None, num_workers=2))  # noqa: E731
    assert run(rank=0, epoch=0) == run(rank=0, epoch=0)
    assert run(rank=0, epoch=0) != run(rank=0, epoch=1)
    assert run(rank=0, epoch=0) != run(rank=1, epoch=0)


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_resume_mid_epoch_continues_the_same_stream(tmp_path: Path, workers: int) -> None:
    urls, counts = _shards(tmp_path, [20, 20, 20])
    full = StreamLoader(_train(urls, counts, 0, batches_per_rank=11), num_workers=workers)
    reference = [b["key"] for b in full]
    for k in (1, 4, 7):
        resumed = StreamLoader(_train(urls, counts, 0, batches_per_rank=11), num_workers=workers)
        resumed.load_state_dict({"epoch": 0, "batches": k, "seed": 3})
        assert [b["key"] for b in resumed] == reference[k:]
        resumed.set_epoch(1)
        assert len(list(resumed)) == 11


def test_stream_loader_reports_its_position(tmp_path: Path) -> None:
    urls, counts = _shards(tmp_path, [30])
    loader = StreamLoader(_train(urls, counts, 0, batches_per_rank=5, epoch=2), num_workers=0)
    assert len(loader) == 5
    loader.mark_consumed(3)
    assert loader.state_dict() == {"epoch": 2, "batches": 3, "seed": 3}


def test_default_collate_builds_tensor_batches(tmp_path: Path) -> None:
    urls, counts = _shards(tmp_path, [10])
    stream = EvalStream(urls, counts, lambda s: {"x": torch.as_tensor(decode_fields(s)["npy"])}, batch_size=4)
    batches = list(stream)
    assert [b["x"].shape[0] for b in batches] == [4, 4, 2]
    assert torch.cat([b["x"] for b in batches]).flatten().tolist() == list(range(10))


def test_manifest_counts_drive_epoch_length(tmp_path: Path) -> None:
    _shards(tmp_path, [10, 10])
    assert epoch_batches(Manifest.load(tmp_path).num_samples, world_size=2, batch_size=3) == 4
