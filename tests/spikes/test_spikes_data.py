"""Calcium data: signal operations, the CASCADE / spikefinder importers, the calcium shard layout, the
training decode, and the spikes configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from calcium_fixtures import write_cascade_tree
from scipy.io import savemat

from vislab.core.errors import ConfigError
from vislab.data.manifest import Manifest
from vislab.families.spikes.calcium import (
    add_matched_noise,
    bin_spikes,
    finite_stretches,
    noise_level,
    noise_std_for_level,
    rebin_counts,
    resample_trace,
)
from vislab.train.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "spikes"


# --------------------------------------------------------------------------------------- signal ops
def test_noise_level_of_white_noise_matches_its_definition() -> None:
    rng = np.random.default_rng(0)
    for rate, nu in ((7.5, 1.0), (30.0, 4.0), (158.0, 2.0)):
        x = rng.normal(0, noise_std_for_level(nu, rate), size=(3, 20000))
        assert np.allclose(noise_level(x, rate), nu, rtol=0.03)


def test_resampling_keeps_the_noise_level_and_constants() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, noise_std_for_level(2.0, 100.0), size=50000)
    down = resample_trace(x, 100.0, 25.0)  # boxcar averaging: nu is invariant
    assert len(down) == 12500
    assert noise_level(down, 25.0) == pytest.approx(2.0, rel=0.06)
    assert np.allclose(resample_trace(np.full(301, 0.7), 30.0, 25.0), 0.7)
    assert np.allclose(resample_trace(np.full(75, -0.2), 7.5, 25.0), -0.2)
    t = np.arange(3000) / 30.0
    slow = np.sin(2 * np.pi * 0.5 * t)  # a smooth signal survives 30 -> 25 -> 30 Hz
    back = resample_trace(resample_trace(slow, 30.0, 25.0), 25.0, 30.0)
    assert np.abs(back[5:-5] - slow[5:len(back) - 5]).max() < 0.02


def test_rebin_counts_conserves_spikes_and_marks_nan() -> None:
    counts = np.array([[0, 1, 0, 2, 0, 0, 1, 0, 0, 3.0] * 30])
    cumulative = np.concatenate([[0.0], np.cumsum(counts[0])])
    for target in (7.5, 25.0, 41.0, 158.0):
        out = rebin_counts(counts, 30.0, target)
        num = math.floor(300 * target / 30.0 + 1e-9)
        assert out.shape == (1, num)
        # spikes spread uniformly within their input bin: the output holds exactly the covered part
        assert out.sum() == pytest.approx(np.interp(num * 30.0 / target, np.arange(301), cumulative), rel=1e-9)
    gap = counts.copy()
    gap[0, 100:110] = np.nan
    out = rebin_counts(gap, 30.0, 25.0)[0]
    assert np.isnan(out[int(100 * 25 / 30)]) and np.isfinite(out[:80]).all() and np.isfinite(out[95:]).all()


def test_bin_spikes_and_stretches() -> None:
    counts = bin_spikes(np.array([-0.01, 0.0, 0.049, 0.051, 0.26]), 0.0, 10.0, 3)  # bins [-.05, .05), [.05, .15), ...
    assert counts.tolist() == [3.0, 1.0, 0.0]
    x = np.array([np.nan, 1, 2, 3, np.nan, np.inf, 4, 5, np.nan])
    assert finite_stretches(x) == [(1, 4), (6, 8)]
    assert finite_stretches(x, min_length=3) == [(1, 4)]


def test_matched_noise_reaches_the_target_level() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, noise_std_for_level(1.0, 30.0), size=30000)
    for target in (2.0, 5.0):
        noisy = add_matched_noise(x, 30.0, 1.0, target, rng, shot_noise=False)
        assert noise_level(noisy, 30.0) == pytest.approx(target, rel=0.05)
    assert add_matched_noise(x, 30.0, 3.0, 2.0, rng) is x  # never less noisy than the recording


# ------------------------------------------------------------------------------------- importers
def test_cascade_import_splits_per_neuron_and_shards_per_dataset(tmp_path: Path) -> None:
    from vislab.families.spikes.importers.cascade import detect, load_neuron, run

    src = write_cascade_tree(tmp_path / "gt", {"DS01-OGB1": (12.0, 4), "DS02-GCaMP6f": (60.0, 3)})
    assert detect(src)
    recs = load_neuron(src / "DS01-OGB1" / "CAttached_cell0_mini.mat", "DS01-OGB1")
    assert [(r.recording, r.part) for r in recs] == [(0, 0), (1, 0), (1, 1)]  # the NaN gap splits recording 1
    assert recs[0].frame_rate == pytest.approx(12.0) and recs[0].noise_level > 0
    single = load_neuron(src / "DS01-OGB1" / "CAttached_cell1_mini.mat", "DS01-OGB1")
    assert len(single) == 1 and len(single[0].trace) == 480  # a lone struct, not an array
    manifests = run(src, tmp_path / "out", workers=1, log=lambda s: None, samples_per_shard=8)
    meta = manifests["train"].meta
    assert set(meta["datasets"]) == {"DS01-OGB1", "DS02-GCaMP6f"}
    for info in meta["datasets"].values():
        assert len(info["val_neurons"]) == 1 and len(info["train_neurons"]) == info["neurons"] - 1
    assert meta["datasets"]["DS02-GCaMP6f"]["frame_rate"] == pytest.approx(60.0)
    for m in manifests.values():  # every shard holds one dataset, and the manifest says which
        assert set(m.meta["shard_datasets"]) == {s.name for s in m.shards}
    assert manifests["test"].num_samples == (3 + 3) + (3 + 2)  # every part: neuron 0 has 3, the others 1
    assert len(manifests["train"].shards) >= 2


def test_cascade_bad_layouts_name_the_file(tmp_path: Path) -> None:
    from vislab.families.spikes.importers.cascade import load_neuron

    savemat(tmp_path / "other.mat", {"traces": np.zeros((3, 10))})
    with pytest.raises(ConfigError, match=r"other\.mat: no 'CAttached' struct \(variables: traces\)"):
        load_neuron(tmp_path / "other.mat", "DS")
    ephys = np.zeros((1, 1), dtype=[("ephys_raw", object)])
    ephys[0, 0] = (np.zeros(5),)
    savemat(tmp_path / "ephys.mat", {"CAttached": ephys})
    with pytest.warns(UserWarning, match=r"ephys\.mat: recording 0 has no fluo_time"), \
            pytest.raises(ConfigError, match=r"ephys\.mat: no recording with fluo_time"):
        load_neuron(tmp_path / "ephys.mat", "DS")
    (tmp_path / "broken.mat").write_bytes(b"not a mat file")
    with pytest.raises(ConfigError, match=r"broken\.mat: not a readable MATLAB file"):
        load_neuron(tmp_path / "broken.mat", "DS")


def test_spikefinder_csv_import(tmp_path: Path) -> None:
    from vislab.families.spikes.importers.spikefinder import detect, load_pair, run

    rng = np.random.default_rng(3)
    counts = (rng.uniform(size=(2000, 3)) < 0.02).astype(float)
    calcium = rng.normal(size=(2000, 3))
    calcium[1500:, 2] = np.nan  # a shorter neuron, NaN-padded
    header = "0,1,2"
    np.savetxt(tmp_path / "1.train.calcium.csv", calcium, delimiter=",", header=header, comments="")
    np.savetxt(tmp_path / "1.train.spikes.csv", counts, delimiter=",", header=header, comments="")
    assert detect(tmp_path)
    recs = load_pair(tmp_path / "1.train.calcium.csv", 100.0)
    assert [len(r.trace) for r in recs] == [2000, 2000, 1500]
    assert len(recs[0].spike_times) == int(counts[:, 0].sum())
    assert np.array_equal(bin_spikes(recs[0].spike_times, 0.0, 100.0, 2000), counts[:, 0])
    with pytest.raises(ConfigError, match="--frame-rate"):
        run(tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown option --val-fracton"):
        run(tmp_path, tmp_path / "out", frame_rate="100", val_fracton="0.2")


# ------------------------------------------------------------------------------------ the decode
def test_training_crop_targets_align_with_the_spikes() -> None:
    from vislab.families.spikes.recordings import CalciumItem, encode_item
    from vislab.families.spikes.samples import PieceDecode

    rate = 50.0
    x = np.zeros(400, dtype=np.float32)
    spikes = np.array([2.0, 3.0, 4.0, 5.0])  # s, relative to frame 0's centre
    sample = encode_item(CalciumItem("k", x, spikes, {"frame_rate": rate, "noise_level": 0.5}))
    sample["json"] = json.dumps(sample["json"]).encode()  # as read from a shard
    decode = PieceDecode(model_rate=25.0, window=64, segment_frames=64, smoothing_s=0.0, noise_min=0.3,
                         noise_max=0.3, rate_augment=0.0)
    out = decode(_as_bytes(sample))
    assert out["trace"].shape == (127,) and out["target"].shape == (64,) and out["mask"].sum() == 64
    assert out["target"].sum() == out["counts"].sum() >= 1  # every spike in the segment lands in one frame
    assert out["cond"].tolist() == pytest.approx([0.5, 50.0])


def _as_bytes(sample: dict) -> dict:
    import io

    out = {}
    for k, v in sample.items():
        if k.endswith(".npy"):
            buf = io.BytesIO()
            np.save(buf, v)
            out[k] = buf.getvalue()
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------- configs
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vislab.families.spikes.importers.cascade import run

    base = tmp_path_factory.mktemp("cascade")
    src = write_cascade_tree(base / "gt", {"DS01-OGB1": (12.0, 4), "DS02-GCaMP6f": (60.0, 3)})
    run(src, base / "shards", workers=1, log=lambda s: None)
    return base / "shards"


@pytest.mark.parametrize("name", ["cnn", "stm", "demo"])
def test_spike_configs_validate(name: str, tiny_root: Path) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml", [f"data.root={tiny_root}"])
    assert cfg.task == "spikes" and cfg.data.frame_rate == 25


def test_spike_config_problems_are_reported_together(tiny_root: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "cnn.yaml", [f"data.root={tiny_root}", "data.exclude_datasets=[DS01-OGB]",
                                           "data.noise_max=0.1", "model.kernel_sizes=[31,19]"])
    text = str(e.value)
    assert "'data.exclude_datasets' names unknown dataset 'DS01-OGB' (did you mean 'DS01-OGB1'?)" in text
    assert "'data.noise_max'=0.1 is below 'data.noise_min'=0.3" in text
    assert "'model.kernel_sizes' needs three positive integers" in text
    manifest = Manifest.load(tiny_root / "train")
    assert manifest.meta["family"] == "calcium"


@pytest.mark.realdata
def test_shared_cascade_ground_truth_quirks(tmp_path: Path) -> None:
    """The real database: ephys-only trials (DS03), traces longer than their time stamps (DS04), NaN gaps (DS07)."""
    from conftest import needs_shared

    from vislab.families.spikes.importers.cascade import load_ground_truth

    src = needs_shared("cascade")
    for name in ("DS03-Cal520-m-S1", "DS04-OGB1-zf-pDp", "DS07-GCaMP6f-zf-dD"):
        (tmp_path / name).symlink_to(src / name)
    with pytest.warns(UserWarning, match=r"CAttached_S1_Cal520_cell5_mini\.mat: recording 1 has no fluo_time"):
        recs = load_ground_truth(tmp_path, log=lambda s: None)
    by_ds = {d: [r for r in recs if r.dataset == d] for d in ("DS03-Cal520-m-S1", "DS04-OGB1-zf-pDp", "DS07-GCaMP6f-zf-dD")}
    assert {r.neuron for r in by_ds["DS03-Cal520-m-S1"]} and len({r.neuron for r in by_ds["DS04-OGB1-zf-pDp"]}) == 15
    assert all(np.isfinite(r.trace).all() and len(r.trace) >= 2 for r in recs)
    assert np.median([r.frame_rate for r in by_ds["DS03-Cal520-m-S1"]]) == pytest.approx(500.0, rel=1e-3)
    assert np.median([r.frame_rate for r in by_ds["DS04-OGB1-zf-pDp"]]) == pytest.approx(7.8, abs=0.1)
    gappy = [r for r in by_ds["DS07-GCaMP6f-zf-dD"] if r.t0 > 1.0]  # a part after a NaN stretch
    assert gappy and all(0.2 < r.noise_level < 2.0 for r in by_ds["DS07-GCaMP6f-zf-dD"])
