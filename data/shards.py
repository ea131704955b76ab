"""Writing and verifying WebDataset shard sets (one format for every model family).

An importer turns its source into a list of picklable *items* (a file path, a trial index, a window
spec) and an `encode(item) -> sample` function; `write_shard_set` plans shards, writes them in parallel,
each atomically (temp file + rename), and finishes with the manifest. Re-running the same command
resumes: shards already written for the same plan are kept.

A shard is kept only if its fingerprint is unchanged: its items, every option that changes the bytes (the
`options` given, and the plain keyword arguments of an `encode` partial such as `max_side`), and the size,
mtime and sha256 of every source file its items are read from (`sources(item)`). Re-running therefore reads
(hashes) every source file once, but re-encodes only what changed. One writer at a time: `shard_lock`.

A sample is a dict of fields named by tar-member extension, written by webdataset's encoders:
`jpg`/`png` bytes as they are, `cls` int, `npy` arrays, `json` dicts. `__key__` names the sample.
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from vislab.core.errors import ConfigError
from vislab.core.progress import Progress
from vislab.data.manifest import (
    MANIFEST,
    Manifest,
    ShardError,
    ShardInfo,
    atomic_write_text,
    sha256_file,
    unreadable,
)

Sample = dict[str, Any]
PARTS = ".parts"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def plan_shards(
    items: Sequence[Any],
    *,
    max_count: int | None = None,
    max_bytes: int | None = None,
    size_of: Callable[[Any], int] | None = None,
) -> list[list[Any]]:
    """Cut items into consecutive shards of at most `max_count` items / roughly `max_bytes` bytes."""
    if max_bytes is not None and size_of is None:
        raise ValueError("max_bytes needs size_of")
    plans: list[list[Any]] = []
    cur: list[Any] = []
    cur_bytes = 0
    for item in items:
        b = size_of(item) if size_of is not None else 0
        full_count = max_count is not None and len(cur) >= max_count
        full_bytes = max_bytes is not None and cur and cur_bytes + b > max_bytes
        if full_count or full_bytes:
            plans.append(cur)
            cur, cur_bytes = [], 0
        cur.append(item)
        cur_bytes += b
    if cur:
        plans.append(cur)
    return plans


def field_schema(name: str, value: Any) -> dict[str, Any]:
    """Describe one sample field for the manifest."""
    if isinstance(value, np.ndarray):
        return {"kind": "npy", "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, bool | int | np.integer) and name == "cls":
        return {"kind": "cls"}
    if isinstance(value, bytes):
        kind = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png"}.get(name, "bytes")
        return {"kind": kind}
    if isinstance(value, str):
        return {"kind": "txt"}
    return {"kind": "json"}


def merge_schema(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Union of two schemas; array dimensions that differ become None (variable)."""
    out = {k: dict(v) for k, v in a.items()}
    for k, v in b.items():
        if k not in out:
            out[k] = dict(v)
        elif "shape" in v and "shape" in out[k]:
            sa, sb = out[k]["shape"], v["shape"]
            if sa is not None and len(sa) == len(sb):
                out[k]["shape"] = [x if x == y else None for x, y in zip(sa, sb, strict=True)]
            else:
                out[k]["shape"] = None
    return out


def _fingerprint(items: Sequence[Any]) -> str:
    return hashlib.sha256(repr(list(items)).encode()).hexdigest()[:16]


LOCK = ".vislab-shard.lock"


@contextmanager
def shard_lock(out: Path) -> Iterator[None]:
    """Hold `out`'s writer lock (flock: released by the kernel even on kill -9); a second writer fails at once
    with one line instead of both writing into the same shards."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ConfigError([f"{out} is being written by another `vislab shard` ({holder}); wait for it to "
                               f"finish or choose another --out"]) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {platform.node()} since {time.strftime('%H:%M:%S')}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def file_stamp(path: str | os.PathLike[str]) -> str:
    """Size, mtime and sha256 of a source file: what a shard built from it depends on."""
    st = os.stat(path)
    return f"{path}|{st.st_size}|{st.st_mtime_ns}|{sha256_file(path)}"


def encode_options(encode: Callable[[Any], Sample], options: dict[str, Any] | None) -> str:
    """The options that change a shard's bytes: `options`, plus the plain keyword arguments of a partial."""
    found: dict[str, Any] = dict(options or {})
    if isinstance(encode, partial):
        found.update({k: v for k, v in encode.keywords.items() if v is None or isinstance(v, str | int | float | bool)})
    return json.dumps(found, sort_keys=True, default=str)


def _write_one(out_dir: str, index: int, items: list[Any], encode: Callable[[Any], Sample], options: str = "",
               sources: Callable[[Any], Sequence[str]] | None = None, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one shard atomically and its part record; keep it if one with the same fingerprint (items, options,
    source files' size, mtime and sha256) is already there (`known`: its record in the previous manifest)."""
    import webdataset as wds  # webdataset imports torch: kept off the CLI's start-up path

    out = Path(out_dir)
    name = shard_name(index)
    part = out / PARTS / f"{name}.json"
    paths = dict.fromkeys(p for item in items for p in sources(item)) if sources is not None else {}
    stamps = [file_stamp(p) for p in paths]  # each file once (a session file holds many trials)
    fp = hashlib.sha256("\n".join([_fingerprint(items), options, *stamps]).encode()).hexdigest()[:16]
    for rec in (json.loads(part.read_text()) if part.is_file() else None, known):
        if rec and rec["fingerprint"] == fp and (out / name).is_file() and rec["info"]["bytes"] == (out / name).stat().st_size:
            return {**rec, "kept": True}
    tmp = out / f".{name}.tmp"
    schema: dict[str, dict[str, Any]] = {}
    count = 0
    try:
        # integer mtime: no per-member pax header (tar reading is ~2x faster), and identical inputs give
        # byte-identical shards (reproducible sha256)
        with open(tmp, "wb") as f, wds.TarWriter(f, mtime=0) as sink:
            for item in items:
                sample = encode(item)
                schema = merge_schema(schema, {k: field_schema(k, v) for k, v in sample.items() if not k.startswith("__")})
                sink.write(sample)
                count += 1
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave half a shard behind, whatever stopped the writing
        raise
    os.replace(tmp, out / name)
    info = ShardInfo(name=name, count=count, bytes=(out / name).stat().st_size, sha256=sha256_file(out / name))
    rec = {"fingerprint": fp, "info": asdict(info), "schema": schema}
    atomic_write_text(part, json.dumps(rec))
    return rec


def write_shard_set(
    out_dir: str | os.PathLike[str],
    plans: Sequence[list[Any]],
    encode: Callable[[Any], Sample],
    *,
    workers: int = 1,
    source: str = "",
    meta: dict[str, Any] | None = None,
    split: str | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    sources: Callable[[Any], Sequence[str]] | None = None,
    options: dict[str, Any] | None = None,
) -> Manifest:
    """Write `plans` (one item list per shard) under `out_dir` and return its manifest.

    `encode` must be picklable (a module-level function or a functools.partial of one) when workers > 1.
    `sources(item)`: the files an item is read from (picklable too); `options`: settings that change the
    bytes and are not plain keyword arguments of `encode` (see the module docstring).
    `progress`: samples written and their rate on stderr while it runs (vislab.core.progress).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTS).mkdir(exist_ok=True)
    opts = encode_options(encode, options)
    plan_fp = _fingerprint([[_fingerprint(p) for p in plans], opts, json.dumps(meta or {}, sort_keys=True, default=str)])
    old = Manifest.load(out) if (out / MANIFEST).is_file() else None
    old_fps = old.provenance.get("fingerprints", []) if old is not None else []
    known = [{"fingerprint": fp, "info": asdict(s), "schema": old.schema}
             for fp, s in zip(old_fps, old.shards, strict=False)] if old is not None else []
    t0 = time.time()
    job = partial(_write_one, str(out), options=opts, sources=sources)
    records: list[dict[str, Any]] = []
    with Progress(sum(len(p) for p in plans), f"shard {split or out.name}", "samples",
                  mode="auto" if progress else "none") as bar:
        if workers <= 1 or len(plans) <= 1:
            for i, items in enumerate(plans):
                records.append(job(i, items, encode, known=known[i] if i < len(known) else None))
                bar.update(len(items))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(job, i, items, encode, known=known[i] if i < len(known) else None): len(items)
                           for i, items in enumerate(plans)}
                for f in as_completed(futures):
                    bar.update(futures[f])
                records = [f.result() for f in futures]  # plan order
    schema: dict[str, dict[str, Any]] = {}
    for r in records:
        schema = merge_schema(schema, r["schema"])
    shards = [ShardInfo(**r["info"]) for r in records]
    if (old is not None and old.provenance.get("plan") == plan_fp and all(r.get("kept") for r in records)
            and old.shards == shards):
        shutil.rmtree(out / PARTS, ignore_errors=True)
        log(f"{out}: up to date ({old.num_samples} samples in {len(old.shards)} shards; sources and options unchanged)")
        return old
    # stale shards of an earlier, larger plan would be picked up by globbing readers: remove them
    for stale in sorted(out.glob("shard-*.tar"))[len(plans):]:
        stale.unlink()
    manifest = Manifest(
        num_samples=sum(s.count for s in shards),
        shards=shards,
        schema=schema,
        provenance={**provenance(source, plan_fp), "fingerprints": [r["fingerprint"] for r in records],
                    "options": json.loads(opts)},
        meta=meta or {},
        split=split,
    )
    manifest.save(out)
    shutil.rmtree(out / PARTS, ignore_errors=True)
    log(f"{out}: {manifest.num_samples} samples in {len(shards)} shards ({time.time() - t0:.1f} s)")
    return manifest


def provenance(source: str, plan_fp: str) -> dict[str, Any]:
    try:
        ver = version("vislab")
    except PackageNotFoundError:
        ver = "unknown"
    return {
        "source": source,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "user": getpass.getuser(),
        "vislab": ver,
        "plan": plan_fp,
    }


def count_samples(path: str | os.PathLike[str]) -> int:
    """Number of samples (distinct keys) in a tar shard; raises ShardError naming the shard if unreadable."""
    from webdataset.tariterators import (
        base_plus_ext,  # webdataset imports torch: kept off the CLI's start-up path
    )

    keys = 0
    last = None
    try:
        with tarfile.open(path, "r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                prefix, _ = base_plus_ext(member.name)
                if prefix != last:
                    keys += 1
                    last = prefix
                tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ShardError(f"shard {path} is corrupt or truncated: {e}") from e
    return keys


def verify_shard_set(directory: str | os.PathLike[str]) -> list[str]:
    """Full integrity check (hash and sample count of every shard). Returns the problems found."""
    try:
        m = Manifest.load(directory)
    except ShardError as e:
        return [str(e)]
    problems = []
    if m.num_samples == 0 or not m.shards:
        problems.append(f"{directory}: empty shard set ({m.num_samples} samples in {len(m.shards)} shards)")
    for s in m.shards:
        p = Path(directory) / s.name
        if not p.is_file():
            problems.append(f"{p}: missing")
            continue
        if p.stat().st_size != s.bytes:
            problems.append(f"{p}: {p.stat().st_size} bytes, manifest says {s.bytes}")
            continue
        try:
            digest = sha256_file(p)
        except PermissionError as e:
            problems.append(unreadable(p, e))
            continue
        if digest != s.sha256:
            problems.append(f"{p}: sha256 differs from the manifest (corrupt or rewritten)")
            continue
        try:
            n = count_samples(p)
        except ShardError as e:
            problems.append(str(e))
            continue
        if n != s.count:
            problems.append(f"{p}: {n} samples, manifest says {s.count}")
    extra = sorted({q.name for q in Path(directory).glob("*.tar")} - {s.name for s in m.shards})
    for name in extra:
        problems.append(f"{Path(directory) / name}: not listed in the manifest")
    return problems


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
