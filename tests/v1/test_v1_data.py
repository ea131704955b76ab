"""V1 data: simulator -> static importer (and NPZ/HDF5 importer) -> shards -> decode/collate; bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vislab.core.errors import ConfigError
from vislab.data.manifest import Manifest, ShardError
from vislab.data.shards import encode_npy
from vislab.families.v1.data import NeuralDecode, collate_sessions, session_stats
from vislab.families.v1.importers import neural_arrays, static_v1
from vislab.families.v1.simulate import GROUND_TRUTH, SimulationConfig, simulate

TINY = SimulationConfig(sessions=2, neurons=6, train=30, validation=8, test_images=4, repeats=3, height=20, width=24,
                        margin=5, seed=3)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("v1sim")
    simulate(out, TINY)
    return out


def _quiet(_: str) -> None:
    pass


def _read_all(session: Path, name: str) -> np.ndarray:
    n = len(np.load(session / "meta" / "trials" / "tiers.npy"))
    return np.stack([np.load(session / "data" / name / f"{i}.npy") for i in range(n)])


def test_simulator_writes_the_static_layout(sessions: Path) -> None:
    s0 = sessions / "sim-v1-s0"
    assert json.loads((s0 / "config.json").read_text())["links"] == {"targets": "responses", "inputs": "images"}
    tiers = np.load(s0 / "meta" / "trials" / "tiers.npy")
    ids = np.load(s0 / "meta" / "trials" / "frame_image_id.npy")
    assert tiers.dtype.kind == "U" and set(tiers) == {"train", "validation", "test"}
    assert (tiers == "test").sum() == TINY.test_images * TINY.repeats
    assert len(np.unique(ids[tiers == "test"])) == TINY.test_images  # repeats share the image id
    img = np.load(s0 / "data" / "images" / "0.npy")
    assert img.shape == (1, 20, 24) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 255
    assert np.load(s0 / "data" / "responses" / "0.npy").dtype == np.float64
    assert np.load(s0 / "meta" / "neurons" / "cell_motor_coordinates.npy").shape == (6, 3)
    gt = np.load(s0 / GROUND_TRUTH)
    assert ((gt["center_x"] >= 5) & (gt["center_x"] <= 24 - 1 - 5)).all()


def test_static_import_statistics_and_samples(sessions: Path, tmp_path: Path) -> None:
    manifests = static_v1.run(sessions, tmp_path, workers=2, log=_quiet)
    assert set(manifests) == {"train", "val", "test"}
    assert manifests["train"].num_samples == 2 * 30 and manifests["test"].num_samples == 2 * 12
    meta = Manifest.load(tmp_path / "train").meta
    assert meta["family"] == "neural" and set(meta["sessions"]) == {"sim-v1-s0", "sim-v1-s1"}
    info = meta["sessions"]["sim-v1-s1"]
    s1 = sessions / "sim-v1-s1"
    train = np.load(s1 / "meta" / "trials" / "tiers.npy") == "train"
    responses, images = _read_all(s1, "responses")[train], _read_all(s1, "images")[train]
    assert np.allclose(info["statistics"]["responses"]["mean"], responses.mean(0))
    assert np.allclose(info["statistics"]["responses"]["std"], responses.std(0))
    assert info["statistics"]["images"]["mean"] == pytest.approx(images.mean(), rel=1e-6)
    assert info["statistics_tier"] == "train" and info["num_trials"] == {"train": 30, "val": 8, "test": 12}
    assert len(info["cell_motor_coordinates"]) == 6 and info["unit_ids"] == list(range(1, 7))

    stats = session_stats(meta)
    decode = NeuralDecode(stats)
    import webdataset as wds

    raw = list(wds.WebDataset(manifests["train"].urls(tmp_path / "train"), shardshuffle=False))
    decoded = [decode(r) for r in raw]
    assert {d["session"] for d in decoded[:20]} == {"sim-v1-s0", "sim-v1-s1"}  # shards mix sessions
    d = decoded[0]
    trial = d["trial"]
    raw_resp = np.load(sessions / d["session"] / "data" / "responses" / f"{trial}.npy")
    assert torch.allclose(d["responses"], torch.from_numpy(raw_resp * stats[d["session"]].response_scale).float())
    batch = collate_sessions(decoded[:16])
    assert batch["size"] == 16 and sum(len(g["images"]) for g in batch["sessions"].values()) == 16
    g = batch["sessions"]["sim-v1-s0"]
    assert g["images"].shape[1:] == (1, 20, 24) and g["responses"].shape[1] == 6 and g["image_id"].dtype == torch.int64


def test_array_importers_npz_and_hdf5(tmp_path: Path) -> None:
    import h5py

    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {"images": rng.uniform(0, 255, (20, 8, 10)).astype(np.float32),
              "responses": rng.poisson(2.0, (20, 3)).astype(np.float64),
              "tiers": np.array(["train"] * 12 + ["validation"] * 4 + ["test"] * 4),
              "image_ids": np.array(list(range(16)) + [100, 100, 101, 101])}
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "rec_a.npz", **arrays)  # type: ignore[arg-type]  # numpy stubs: allow_pickle
    with h5py.File(src / "rec_b.h5", "w") as f:
        for k, v in arrays.items():
            f[k] = v.astype("S") if v.dtype.kind == "U" else v
    assert neural_arrays.detect(src) and not static_v1.detect(src)
    manifests = neural_arrays.run(src, tmp_path / "out", workers=1, log=_quiet)
    meta = manifests["train"].meta
    assert set(meta["sessions"]) == {"rec_a", "rec_b"} and meta["sessions"]["rec_b"]["image_shape"] == [1, 8, 10]
    assert manifests["test"].num_samples == 8
    assert np.allclose(meta["sessions"]["rec_a"]["statistics"]["responses"]["mean"], arrays["responses"][:12].mean(0))


def _corrupt(session: Path) -> None:
    np.save(session / "data" / "responses" / "3.npy", np.ones(7))  # 7 values, the session has 6 neurons
    nan = np.load(session / "data" / "responses" / "5.npy")
    nan[2] = np.nan
    np.save(session / "data" / "responses" / "5.npy", nan)
    np.save(session / "data" / "images" / "8.npy", np.zeros((1, 20, 25), np.float32))


def test_bad_recordings_are_reported_by_session_and_trial(sessions: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad-session"
    shutil.copytree(sessions / "sim-v1-s0", bad)
    _corrupt(bad)
    with pytest.raises(ConfigError) as e:
        static_v1.run(bad, tmp_path / "out", workers=2, log=_quiet)
    text = "\n".join(e.value.problems)
    assert "session bad-session trial 3" in text and "6 neurons" in text
    assert "session bad-session trial 5" in text and "NaN" in text
    assert "session bad-session trial 8" in text and "(1, 20, 25)" in text
    assert not (tmp_path / "out" / "train").exists()  # found before any shard was written
    with pytest.raises(ConfigError, match="unknown option --image-scal"):
        static_v1.run(sessions, tmp_path / "out", log=_quiet, image_scal="0.5")


def _raw(session: str, trial: int, image: np.ndarray, responses: np.ndarray) -> dict[str, object]:
    return {"__key__": f"{session}_{trial:07d}", "__url__": "shard-000000.tar", "image.npy": encode_npy(image),
            "responses.npy": encode_npy(responses), "json": json.dumps({"session": session, "trial": trial, "image_id": 1}).encode()}


def test_decode_rejects_bad_trials_naming_session_and_trial(sessions: Path, tmp_path: Path) -> None:
    static_v1.run(sessions / "sim-v1-s0", tmp_path, workers=1, log=_quiet)
    decode = NeuralDecode(session_stats(Manifest.load(tmp_path / "train").meta))
    img, resp = np.zeros((1, 20, 24), np.float32), np.ones(6, np.float32)
    assert decode(_raw("sim-v1-s0", 4, img, resp))["responses"].shape == (6,)
    with pytest.raises(ShardError, match=r"session sim-v1-s0 trial 4 .*5 neurons|session sim-v1-s0 trial 4 .*has 6"):
        decode(_raw("sim-v1-s0", 4, img, np.ones(5, np.float32)))
    with pytest.raises(ShardError, match="session sim-v1-s0 trial 9.*NaN"):
        decode(_raw("sim-v1-s0", 9, img, np.array([1, 2, np.nan, 1, 1, 1], np.float32)))
    with pytest.raises(ShardError, match=r"session sim-v1-s0 trial 2.*\(1, 18, 24\)"):
        decode(_raw("sim-v1-s0", 2, np.zeros((1, 18, 24), np.float32), resp))
    with pytest.raises(ShardError, match="session other trial 1.*not in the training manifest"):
        decode(_raw("other", 1, img, resp))
