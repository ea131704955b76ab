"""Frozen-backbone features computed once into shards (fast paths of the linear probe and the saliency readout).

`<cache>/<key>/{train,val,test}/` mirror the input shard sets one shard for one shard and one sample for
one sample (same keys). What a sample holds is the family's business: a `compute` function maps the raw
samples of one input shard (and the split's name) to the output samples (e.g. `{"npy": pre-logits,
"cls": label}`). The key hashes
everything the features depend on (`spec`: architecture, weights, preprocessing, layers; and the input
manifests' hashes), so a changed input gets a new cache and an unchanged one is reused. Extraction is
resumable (`write_shard_set` keeps finished shards); under DDP rank 0 extracts and the other ranks wait
for `complete.json`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vislab.core.progress import Progress
from vislab.data.manifest import MANIFEST, ShardError, check_shard_set, sha256_file, split_dirs, unreadable
from vislab.data.pipeline import _SkipStats, read_shard
from vislab.data.shards import write_shard_set

FEATURE_FORMAT = 1
COMPLETE = "complete.json"
CHUNK = 256
"""Samples per `compute` call (a multiple of the usual batch sizes): the progress lines' granularity."""
Compute = Callable[[list[dict[str, Any]], str], list[dict[str, Any]]]  # (raw samples of a shard, split)


def cache_dir(cache_root: str | Path, input_root: str | Path, spec: dict[str, Any]) -> Path:
    """`<cache_root>/<key>`: the key covers `spec` and the input shard manifests."""
    try:
        manifests = {s: sha256_file(Path(d) / MANIFEST) for s, d in split_dirs(input_root).items()}
    except PermissionError as e:
        raise ShardError(unreadable(Path(e.filename), e)) from e
    blob = json.dumps({"format": FEATURE_FORMAT, "spec": spec, "manifests": manifests}, sort_keys=True)
    return Path(cache_root) / hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class ShardFeatures:
    """`encode` for write_shard_set: item (shard index, shard hash, sample index) -> output sample.

    The first item of a shard computes the whole shard (batched); the others are served from memory."""

    urls: list[str]
    counts: list[int]
    compute: Compute
    split: str
    progress: Callable[[int], None] | None = None
    """Called with the number of samples computed, every CHUNK samples (the extraction's progress)."""
    _shard: int = -1
    _samples: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, item: tuple[int, str, int]) -> dict[str, Any]:
        index, _, j = item
        if index != self._shard:
            raw = list(read_shard(self.urls[index], self.counts[index], "raise", _SkipStats()))
            self._samples = []
            for c in range(0, len(raw), CHUNK):  # the samples are independent: chunks only pace the progress
                self._samples += self.compute(raw[c:c + CHUNK], self.split)
                if self.progress is not None:
                    self.progress(len(raw[c:c + CHUNK]))
            if len(self._samples) != len(raw):
                raise ShardError(f"feature computation returned {len(self._samples)} samples for {len(raw)} in {self.urls[index]}")
            self._shard = index
        return self._samples[j]


def extract_features(input_root: str | Path, out: Path, compute: Compute, spec: dict[str, Any],
                     log: Callable[[str], None] = print) -> Path:
    """Write the feature shard sets of every split of `input_root` under `out` (skipping finished work)."""
    t0 = time.time()
    for split, d in split_dirs(input_root).items():
        m = check_shard_set(d)
        plans = [[(i, s.sha256[:16], j) for j in range(s.count)] for i, s in enumerate(m.shards)]
        with Progress(m.num_samples, f"features {split}", "samples") as bar:
            encode = ShardFeatures(m.urls(d), [s.count for s in m.shards], compute, split, progress=bar.update)
            try:
                write_shard_set(out / split, plans, encode, workers=1, source=str(Path(d).resolve()),
                                meta={**m.meta, "features": spec}, split=split, log=log, progress=False)
            except PermissionError as e:
                raise ShardError(f"feature cache {out}: cannot write {e.filename} ({e.strerror}): another user's "
                                 f"incomplete cache? set model.feature_cache to a folder of yours") from e
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


def cached_features(input_root: str | Path, cache_root: str | Path, spec: dict[str, Any],
                    compute: Callable[[], Compute], rank: int, timeout_s: float,
                    log: Callable[[str], None] = print) -> Path:
    """The cache directory for (`input_root`, `spec`), computed by rank 0 if missing (`compute()` is only
    called then, so a model is only built when there is work for it)."""
    out = cache_dir(cache_root, input_root, spec)
    if (out / COMPLETE).is_file():
        return out
    if rank != 0:
        return wait_for_features(out, timeout_s)
    log(f"computing features of {input_root} into {out}")
    return extract_features(input_root, out, compute(), spec, log=log)


def weights_identity(weights: str | None, seed: int) -> str:
    """The weights named by content where they are files (a rewritten file must not reuse old features);
    a random initialisation by its seed."""
    if weights is None:
        return f"random init, seed {seed}"
    p = Path(weights)
    f = p / "model.safetensors" if p.is_dir() else p
    if f.is_file():
        st = f.stat()
        return hashlib.sha256(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return weights
