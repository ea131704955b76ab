"""Reading shard sets: a resampled, resumable training stream and exact-once evaluation streams.

Training: every (rank, worker) draws shards with replacement from its own RNG seeded by
(seed, epoch, rank, worker), shuffles samples in a buffer, decodes and batches them. The epoch is cut at
`batches_per_rank` batches on every rank, so DDP ranks always step together, whatever the shard sizes.
Rank batch j is produced by (logical) worker j % W as its (j // W)-th batch, in the DataLoader's
round-robin order, so the stream is a pure function of (seed, epoch, rank) and resuming at batch k only
has to skip raw (undecoded) samples.

Evaluation: each sample is read by exactly one (rank, worker): shards are dealt out when there are at
least as many shards as readers, otherwise samples are dealt out by index. Metrics computed with two
processes therefore equal those computed with one.

Families plug in a `decode(sample) -> dict` (raw tar fields -> tensors); the reader does not change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import random
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info
from webdataset.filters import _shuffle
from webdataset.tariterators import group_by_keys

from vislab.data.manifest import ShardError
from vislab.data.tarstream import tar_members

Sample = dict[str, Any]
Decode = Callable[[Sample], Sample]
Collate = Callable[[list[Sample]], Any]


@dataclass
class _SkipStats:
    skipped: int = 0

    def take(self) -> int:
        n, self.skipped = self.skipped, 0
        return n


def read_shard(url: str, expected: int, on_error: str, stats: _SkipStats) -> Iterator[Sample]:
    """Samples of one tar shard. A missing/corrupt/short shard raises ShardError naming it, or, with
    on_error='skip', warns and counts the samples that were lost."""
    n = 0
    try:
        with open(url, "rb", buffering=1 << 20) as stream:
            members = ({**m, "__url__": url} for m in tar_members(stream))
            for sample in group_by_keys(members):
                n += 1
                yield sample
        if n != expected:
            raise ShardError(f"shard {url} holds {n} samples, its manifest says {expected}")
    except Exception as e:  # tarfile, OSError, webdataset's own errors: all mean "this shard is bad"
        msg = str(e) if isinstance(e, ShardError) else f"shard {url} is unreadable after {n} samples: {e!r}"
        if on_error == "raise":
            raise ShardError(msg) from e
        warnings.warn(f"{msg}; skipping {max(0, expected - n)} samples (data.on_error=skip)", stacklevel=2)
        stats.skipped += max(0, expected - n)


def shard_samples(url: str, expected: int) -> Iterator[Sample]:
    """Samples of one tar shard for readers outside a loader: a missing/corrupt/short shard raises ShardError."""
    return read_shard(url, expected, "raise", _SkipStats())


def decoded(samples: Iterator[Sample], decode: Decode, on_error: str, stats: _SkipStats) -> Iterator[Sample]:
    """`decode` of every sample; a sample that cannot be decoded (ShardError: a corrupt image, a bad array)
    raises, or with on_error='skip' is dropped with a warning and counted like a lost shard's samples."""
    for s in samples:
        try:
            yield decode(s)
        except ShardError as e:
            if on_error == "raise":
                raise
            warnings.warn(f"{e}; skipping the sample (data.on_error=skip)", stacklevel=2)
            stats.skipped += 1


def _load_npy(data: bytes) -> Any:
    return np.load(io.BytesIO(data), allow_pickle=False)


_FIELD_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "npy": _load_npy,
    "cls": lambda b: int(b),
    "json": lambda b: __import__("json").loads(b),
    "txt": lambda b: b.decode("utf-8"),
}


def decode_fields(sample: Sample) -> Sample:
    """Decode the non-image fields of a raw sample by extension (npy, cls, json, txt); never unpickles.
    Keys such as `responses.npy` decode by their last extension."""
    out: Sample = {}
    for key, value in sample.items():
        ext = key.rsplit(".", 1)[-1]
        fn = _FIELD_DECODERS.get(ext) if isinstance(value, bytes | bytearray) and not key.startswith("__") else None
        out[key] = fn(value) if fn else value
    return out


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _batches(samples: Iterator[Sample], size: int, collate: Collate, stats: _SkipStats, partial: bool) -> Iterator[Any]:
    buf: list[Sample] = []
    for s in samples:
        buf.append(s)
        if len(buf) == size:
            yield _with_stats(collate(buf), stats)
            buf = []
    if buf and partial:
        yield _with_stats(collate(buf), stats)


def _with_stats(batch: Any, stats: _SkipStats) -> Any:
    if isinstance(batch, dict):
        batch["skipped"] = stats.take()
    return batch


@dataclass
class TrainStream(IterableDataset):
    """One rank's training stream for one epoch (see module docstring)."""

    urls: list[str]
    counts: list[int]
    decode: Decode
    batch_size: int
    batches_per_rank: int
    seed: int
    rank: int = 0
    shuffle_buffer: int = 2000
    on_error: str = "raise"
    collate: Collate = default_collate
    epoch: int = 0
    skip_batches: int = 0
    stats: _SkipStats = field(default_factory=_SkipStats)

    def __post_init__(self) -> None:
        super().__init__()

    def worker_plan(self, worker: int, num_workers: int) -> tuple[int, int, int]:
        """(logical worker, batches it already produced before `skip_batches`, batches it yields now)."""
        k, n, w = self.skip_batches, self.batches_per_rank, num_workers
        logical = (worker + k) % w  # rotate so that the first batch after a resume is batch k
        done = max(0, math.ceil((k - logical) / w))
        total = max(0, math.ceil((n - logical) / w))
        return logical, done, total - done

    def raw_samples(self, logical: int) -> Iterator[Sample]:
        """Infinite shuffled stream of undecoded samples of this (epoch, rank, logical worker)."""
        rng = random.Random(f"vislab/{self.seed}/{self.epoch}/{self.rank}/{logical}")

        def shards() -> Iterator[Sample]:
            while True:
                i = rng.randrange(len(self.urls))
                yield from read_shard(self.urls[i], self.counts[i], self.on_error, self.stats)

        return _shuffle(shards(), bufsize=self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)

    def __iter__(self) -> Iterator[Any]:
        worker, num_workers = _worker()
        logical, done, todo = self.worker_plan(worker, num_workers)
        raw = self.raw_samples(logical)
        for _ in range(done * self.batch_size):  # fast-forward: no decoding
            next(raw)
        batches = _batches(decoded(raw, self.decode, self.on_error, self.stats), self.batch_size, self.collate, self.stats,
                           partial=False)
        for b in range(done, done + todo):
            # augmentation draws depend only on (seed, epoch, rank, batch j = logical + b * W), so a resumed
            # epoch gets the crops an uninterrupted one would have got; the caller's RNG is left untouched
            seed = random.Random(f"vislab/augment/{self.seed}/{self.epoch}/{self.rank}/{logical + b * num_workers}")
            with seeded(seed.getrandbits(63)):
                batch = next(batches)
            yield batch


@dataclass
class EvalStream(IterableDataset):
    """Every sample of a shard set exactly once across all ranks and workers."""

    urls: list[str]
    counts: list[int]
    decode: Decode
    batch_size: int
    rank: int = 0
    world_size: int = 1
    on_error: str = "raise"
    collate: Collate = default_collate
    stats: _SkipStats = field(default_factory=_SkipStats)

    def __post_init__(self) -> None:
        super().__init__()

    def _mine(self) -> Iterator[Sample]:
        worker, num_workers = _worker()
        readers = self.world_size * num_workers
        me = self.rank * num_workers + worker
        if len(self.urls) >= readers:  # deal out whole shards
            for i in range(me, len(self.urls), readers):
                yield from read_shard(self.urls[i], self.counts[i], self.on_error, self.stats)
            return
        index = 0  # fewer shards than readers: deal out samples by global index
        for url, count in zip(self.urls, self.counts, strict=True):
            for sample in read_shard(url, count, self.on_error, self.stats):
                if index % readers == me:
                    yield sample
                index += 1

    def __iter__(self) -> Iterator[Any]:
        return _batches(decoded(self._mine(), self.decode, self.on_error, self.stats), self.batch_size, self.collate,
                        self.stats, partial=True)


def ignore_stop_signals(worker_id: int) -> None:
    """Ctrl-C reaches every process of the terminal's group, Slurm's SIGTERM / SIGUSR1 every process of the
    job step: the training process decides what they mean (a checkpoint at the next step, which needs the
    next batches), so its loader workers must not die of them first. They end with the training process."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch, Python and numpy random draws inside come from `seed`; the global states outside are untouched
    (a decoder may use any of the three, in a worker or, with num_workers=0, in the training process)."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


def loader_kwargs(num_workers: int, pin_memory: bool, seed: str = "eval") -> dict[str, Any]:
    # the loader's own generator seeds its workers: without it, every iter() draws from the process's global
    # torch RNG, and a resumed run (fewer iter() calls) would see other dropout masks than an uninterrupted one
    generator = torch.Generator().manual_seed(random.Random(f"vislab/loader/{seed}").getrandbits(63))
    kw: dict[str, Any] = {"batch_size": None, "num_workers": num_workers, "pin_memory": pin_memory,
                          "generator": generator}
    if num_workers > 0:
        kw.update(worker_init_fn=ignore_stop_signals, prefetch_factor=4, multiprocessing_context=worker_context())
    return kw


@functools.cache
def worker_context() -> BaseContext:
    """Workers are forked from a single-threaded fork server, never from the training process: a fork while
    another thread of it holds an interpreter lock (wandb, TensorBoard, gloo or a finishing loader's queue
    feeder) leaves the worker deadlocked before its first line (CPython 3.11; seen in CI: one rank's new
    epoch never got a batch and the other waited in all-reduce forever). Forking a process that has
    initialised CUDA is unsafe as well. Python 3.14 makes the fork server Linux's default.

    The server imports, once, the main module and the modules of vislab's lower layers that the training
    process has imported by the time of its first loader: a worker unpickling a family's decoder, or running
    the main module again, would import them at every epoch otherwise (~1 s per worker). Not the entry layer
    (`vislab.train`): its loggers have no business in a process that must stay single-threaded."""
    ctx = torch.multiprocessing.get_context("forkserver")
    loaded = sorted(name for name in sys.modules if name.startswith("vislab.") and not name.startswith("vislab.train"))
    ctx.set_forkserver_preload(["vislab.data.worker_server", *loaded, *_main_preload()])
    return ctx


def _main_preload() -> list[str]:
    """The main module's importable name: the `-m` name, or for a script such as pip's `vislab` (run from
    its path: Python 3.11's fork server ignores a `__main__` preload) the module its `main` comes from.
    `pkg.__main__` modules (pytest's) run their program on import: skipped, as multiprocessing skips them.
    A script of one's own must guard its entry point with `if __name__ == "__main__":`, as with any fork
    server or spawn start method."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None) or getattr(getattr(main, "main", None),
                                                                           "__module__", None)
    return [] if not name or name == "__main__" or name.endswith(".__main__") else [name]


class StreamLoader:
    """The training loader Lightning sees: fixed length per epoch, `set_epoch`, and a resumable position.

    `state_dict()` goes into checkpoints (as ShardDataModule's state) and `load_state_dict()` is applied
    before the first `iter()` on resume, so a requeued job continues the epoch at the batch where it stopped.
    `mark_consumed` is called after every finished training batch (see train/trainer.py).
    """

    def __init__(self, stream: TrainStream, num_workers: int, pin_memory: bool = False):
        self.stream = stream
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.consumed = 0
        self.sampler = self  # Lightning calls `loader.sampler.set_epoch(epoch)` at every epoch start

    def __len__(self) -> int:
        return self.stream.batches_per_rank

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.stream.epoch:
            self.stream.epoch = epoch
            self.stream.skip_batches = 0
            self.consumed = 0

    def mark_consumed(self, batches: int) -> None:
        self.consumed = batches

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.stream.epoch, "batches": self.consumed, "seed": self.stream.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= self.stream.batches_per_rank:  # saved at the end of an epoch: resume with the next one
            epoch, batches = epoch + 1, 0
        self.stream.epoch = epoch
        self.stream.skip_batches = batches
        self.consumed = batches

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing starts before the first batch is asked for. Lightning calls iter() once only to
        # check the loader, and again before `set_epoch` / the resume position are applied; the skip stays
        # until `set_epoch` moves to the next epoch.
        stream = dataclasses.replace(self.stream)
        self.consumed = stream.skip_batches
        seed = f"{stream.seed}/{stream.epoch}/{stream.rank}"
        yield from DataLoader(stream, **loader_kwargs(self.num_workers, self.pin_memory, seed))


def epoch_batches(num_samples: int, world_size: int, batch_size: int) -> int:
    """Batches per rank per epoch: every rank gets the same number, together covering the data once."""
    return max(1, math.ceil(num_samples / (world_size * batch_size)))
