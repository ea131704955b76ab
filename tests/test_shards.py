"""Shard writing, manifests, verification and corrupt/missing shard errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from conftest import run_cli

from vislab.data.importers.imagefolder import run as shard_imagefolder
from vislab.data.manifest import Manifest, ShardError, check_shard_set
from vislab.data.pipeline import EvalStream, _SkipStats, read_shard
from vislab.data.shards import plan_shards, verify_shard_set, write_shard_set


def _encode(i: int) -> dict:
    return {"__key__": f"s{i:04d}", "npy": np.full((3, 2), i, dtype=np.float32), "cls": i % 5, "json": {"i": i}}


def test_round_trip_and_manifest(tmp_path: Path) -> None:
    plans = plan_shards(list(range(23)), max_count=10)
    assert [len(p) for p in plans] == [10, 10, 3]
    m = write_shard_set(tmp_path, plans, _encode, source="unit test", meta={"family": "toy"}, split="train",
                        log=lambda s: None)
    assert m.num_samples == 23 and [s.count for s in m.shards] == [10, 10, 3]
    assert m.schema["npy"] == {"kind": "npy", "dtype": "float32", "shape": [3, 2]}
    assert m.schema["cls"] == {"kind": "cls"} and m.schema["json"] == {"kind": "json"}
    assert m.provenance["source"] == "unit test" and m.provenance["time"] and m.provenance["command"]
    loaded = Manifest.load(tmp_path)
    assert loaded == m and len(loaded.shards[0].sha256) == 64
    samples = list(wds.WebDataset(m.urls(tmp_path), shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == [f"s{i:04d}" for i in range(23)]
    assert all(int(s["cls"]) == i % 5 and s["json"]["i"] == i and s["npy"][0, 0] == i for i, s in enumerate(samples))
    assert verify_shard_set(tmp_path) == []


def _encode_failing(i: int, fail_from: int) -> dict:
    if i >= fail_from:
        raise RuntimeError("disk full")
    return _encode(i)


def _encode_dies_at_25(i: int) -> dict:
    # not a partial: the plain keyword arguments of a partial encoder are options of the shard set's fingerprint
    return _encode_failing(i, fail_from=25)


def test_resume_keeps_finished_shards(tmp_path: Path) -> None:
    plans = plan_shards(list(range(30)), max_count=10)
    with pytest.raises(RuntimeError, match="disk full"):  # the first attempt dies in the third shard
        write_shard_set(tmp_path, plans, _encode_dies_at_25, log=lambda s: None)
    assert not (tmp_path / "manifest.json").exists() and not (tmp_path / "shard-000002.tar").exists()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.tar")}
    assert sorted(before) == ["shard-000000.tar", "shard-000001.tar"]
    messages: list[str] = []
    m = write_shard_set(tmp_path, plans, _encode, log=messages.append)
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.tar")}
    assert m.num_samples == 30 and verify_shard_set(tmp_path) == []
    assert after["shard-000000.tar"] == before["shard-000000.tar"]  # finished shards are not rewritten
    m2 = write_shard_set(tmp_path, plans, _encode, log=messages.append)  # complete: nothing to do
    assert m2 == m and "up to date" in messages[-1]


def test_imagefolder_keeps_jpeg_bytes_and_classes(tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    originals = {}
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (src / split / cls).mkdir(parents=True)
            for i in range(3):
                p = src / split / cls / f"img.{i}.jpg"  # a dot in the stem must not break keys
                Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(p, quality=80)
                originals[p.read_bytes()] = cls
    ms = shard_imagefolder(src, tmp_path / "out", shard_size_mb=0.002, workers=2, log=lambda s: None)
    assert set(ms) == {"train", "val"} and ms["train"].meta["classes"] == ["cat", "dog"]
    assert len(ms["train"].shards) > 1  # the size target split the set
    for split in ("train", "val"):
        for s in wds.WebDataset(ms[split].urls(tmp_path / "out" / split), shardshuffle=False):
            assert originals[s["jpg"]] == ["cat", "dog"][int(s["cls"])]  # bytes unchanged, label right
    resized = shard_imagefolder(src, tmp_path / "small", max_side=10, workers=1, log=lambda s: None)
    from io import BytesIO

    s = next(iter(wds.WebDataset(resized["train"].urls(tmp_path / "small" / "train"), shardshuffle=False)))
    assert max(Image.open(BytesIO(s["jpg"])).size) == 10


def test_shard_cli_and_verify(tmp_path: Path, digits_root: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(digits_root, root)
    ok = run_cli(["shard", "verify", str(root)], cwd=tmp_path)
    assert ok.stdout.count(": ok") == 3
    shard = sorted((root / "train").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # flip a byte: the hash no longer matches
    shard.write_bytes(bytes(data))
    bad = run_cli(["shard", "verify", str(root)], cwd=tmp_path, check=False)
    assert bad.returncode == 1 and str(shard) in bad.stderr and "sha256" in bad.stderr


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_shard_is_an_error_naming_it(tmp_path: Path) -> None:
    write_shard_set(tmp_path, plan_shards(list(range(20)), max_count=10), _encode, log=lambda s: None)
    m = Manifest.load(tmp_path)
    victim = tmp_path / m.shards[1].name
    _truncate(victim)
    with pytest.raises(ShardError, match="shard-000001.tar"):
        check_shard_set(tmp_path)  # cheap pre-flight check: size differs from the manifest
    with pytest.raises(ShardError, match="shard-000001.tar"):
        list(read_shard(str(victim), 10, "raise", _SkipStats()))


def test_skip_policy_counts_lost_samples(tmp_path: Path) -> None:
    write_shard_set(tmp_path, plan_shards(list(range(20)), max_count=10), _encode, log=lambda s: None)
    m = Manifest.load(tmp_path)
    _truncate(tmp_path / m.shards[1].name)
    stream = EvalStream(m.urls(tmp_path), [s.count for s in m.shards], decode=lambda s: {"key": s["__key__"]},
                        batch_size=4, on_error="skip")
    with pytest.warns(UserWarning, match="shard-000001.tar.*skipping"):
        batches = list(stream)
    seen = sum(len(b["key"]) for b in batches)
    assert seen < 20 and seen + sum(b["skipped"] for b in batches) == 20  # nothing dropped silently


def test_manifest_records_counts_as_json(tmp_path: Path) -> None:
    write_shard_set(tmp_path, [[1, 2], [3]], _encode, log=lambda s: None)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["num_samples"] == 3 and [s["count"] for s in raw["shards"]] == [2, 1]


def _webdataset_members(path: Path) -> list[tuple[str, bytes]]:
    from webdataset.tariterators import tar_file_iterator

    with open(path, "rb") as f:
        return [(m["fname"], m["data"]) for m in tar_file_iterator(f)]


def _fast_members(path: Path) -> list[tuple[str, bytes]]:
    from vislab.data.tarstream import tar_members

    with open(path, "rb") as f:
        return [(m["fname"], m["data"]) for m in tar_members(f)]


def test_fast_tar_reader_reads_what_webdataset_reads(tmp_path: Path) -> None:
    write_shard_set(tmp_path / "s", [list(range(7))], _encode, log=lambda s: None)
    shard = next((tmp_path / "s").glob("*.tar"))
    assert _fast_members(shard) == _webdataset_members(shard) and len(_fast_members(shard)) == 21
    # tars from elsewhere: a 150-byte name (ustar prefix), a pax header, a GNU long name, a directory, a link
    import io
    import tarfile

    long_dir = "d" * 120
    for fmt in (tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        path = tmp_path / f"other-{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            for name, data in (("a.txt", b"x" * 700), (f"{long_dir}/b.txt", b"yy"), ("c.bin", b"")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            d = tarfile.TarInfo("sub")
            d.type = tarfile.DIRTYPE
            tar.addfile(d)
            if fmt != tarfile.USTAR_FORMAT:
                info = tarfile.TarInfo("e" * 200 + ".txt")  # needs a pax / GNU long-name header
                info.size = 3
                tar.addfile(info, io.BytesIO(b"zzz"))
        assert _fast_members(path) == _webdataset_members(path), fmt


def test_fast_tar_reader_rejects_corruption(tmp_path: Path) -> None:
    import tarfile

    write_shard_set(tmp_path, [list(range(3))], _encode, log=lambda s: None)
    shard = next(tmp_path.glob("*.tar"))
    data = bytearray(shard.read_bytes())
    data[5] ^= 0xFF  # the first header's name: its checksum no longer matches
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    with pytest.raises(tarfile.ReadError, match="bad tar header at byte 0"):
        _fast_members(bad)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.read_bytes()[:2700])  # inside the third member (152 bytes of .npy)
    with pytest.raises(tarfile.ReadError, match="truncated"):
        _fast_members(cut)
