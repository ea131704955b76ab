"""End to end on simulated calcium: the demo config recovers the spikes, `vislab test` reports per dataset
and neuron (the same with two gloo processes), `vislab infer` on every input format and bad input,
`vislab crossval`, and `vislab shard` detecting the CASCADE layout."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_cli
from scipy.io import savemat

from vislab.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "spikes" / "demo.yaml"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`vislab fit configs/spikes/demo.yaml`: simulated data made on the fly, one process. (run dir, data root)"""
    base = tmp_path_factory.mktemp("spikes_demo")
    root = base / "sim"
    out = run_cli(["fit", str(DEMO), f"data.root={root}", f"runs_root={base / 'runs'}", "logger.wandb=false",
                   "trainer.progress_bar=none"], cwd=base, timeout=900, env={"OMP_NUM_THREADS": "1"})
    return Path(out.stdout.strip().splitlines()[-1]), root


def test_demo_recovers_simulated_spikes(demo_run: tuple[Path, Path]) -> None:
    run_dir, _ = demo_run
    summary = json.loads((run_dir / "summary.json").read_text())
    rep = summary["test_report"]
    assert rep["corr"] >= 0.8, rep["datasets"]  # low noise (nu 0.5): the spikes are recovered
    assert set(rep["datasets"]) == {"SIM00-tau0.4s", "SIM01-tau1.2s"}
    assert all(d["neurons_unseen"] == 3 for d in rep["datasets"].values())  # the per-neuron val split


def test_test_report_is_the_same_with_two_processes(demo_run: tuple[Path, Path]) -> None:
    """`vislab test` with two gloo processes gathers the per-neuron sums: the same report as fit's one process."""
    run_dir, root = demo_run
    summary = json.loads((run_dir / "summary.json").read_text())
    one = summary["test_report"]
    out = run_cli(["test", str(DEMO), f"data.root={root}", f"ckpt={summary['best_checkpoint']}", "trainer.devices=2",
                   "trainer.accelerator=cpu", "logger.wandb=false", "trainer.progress_bar=none"], cwd=run_dir,
                  timeout=600, env={"OMP_NUM_THREADS": "1"})
    two = json.loads(out.stdout.strip().splitlines()[-1])
    assert two["test/corr"] == pytest.approx(one["corr"], abs=1e-6) and two["corr"] == pytest.approx(one["corr"], abs=1e-9)
    assert len(two["neurons"]) == 24 and two["neurons"].keys() == one["neurons"].keys()
    for key, score in one["neurons"].items():
        assert two["neurons"][key]["corr"] == pytest.approx(score["corr"], abs=1e-6)
        assert two["neurons"][key]["bins"] == score["bins"]
    assert {"corr", "error", "bias", "neurons"} <= set(two["datasets"]["SIM00-tau0.4s"])


def _simulated_traces(neurons: int = 4, seconds: float = 60.0) -> np.ndarray:
    """Recordings like the demo's (60 Hz, nu 0.4: inside what the demo model was trained for)."""
    from vislab.families.spikes.simulate import calcium_trace, spike_train

    rng = np.random.default_rng(7)
    return np.stack([calcium_trace(spike_train(rng, seconds, 0.5, 0.3), seconds, 60.0, 0.4, 0.05, 0.35, rng, 0.4)
                     for _ in range(neurons)])


def test_infer_reads_every_format_and_writes_spikes_plot_and_facts(demo_run: tuple[Path, Path], tmp_path: Path) -> None:
    from vislab.families.spikes.infer import run_infer

    run_dir, _ = demo_run
    traces = _simulated_traces()
    np.save(tmp_path / "t.npy", traces)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["dff"] = traces
    np.savetxt(tmp_path / "t.csv", traces.T, delimiter=",")  # spikefinder-style: one column per neuron
    savemat(tmp_path / "t.mat", {"dff": traces})
    results = {}
    for name in ("t.npy", "t.h5", "t.csv", "t.mat"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            facts = run_infer(run_dir, tmp_path / name, 60.0, tmp_path / f"{name}.spikes.npy")
        assert not [w for w in caught if name in str(w.message)] and facts["warnings"] == []  # a clean recording
        results[name] = np.load(facts["output"])
        assert results[name].shape == traces.shape
        assert Path(facts["plot"]).stat().st_size > 1000
        assert len(facts["noise_levels"]) == 4 and all(0.3 < v < 0.6 for v in facts["noise_levels"])
    assert np.allclose(results["t.npy"], results["t.csv"], equal_nan=True, atol=1e-5)
    assert np.allclose(results["t.npy"], results["t.h5"], equal_nan=True)
    spikes = results["t.npy"]
    assert np.isnan(spikes[:, :10]).all() and np.isfinite(spikes[:, 100:-100]).all() and (spikes[:, 100:-100] >= 0).all()


def test_infer_cli_on_nan_stretches_and_a_far_frame_rate(demo_run: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir, _ = demo_run
    traces = _simulated_traces()
    traces[2, 600:700] = np.nan
    np.save(tmp_path / "gap.npy", traces)
    out = run_cli(["infer", str(run_dir), str(tmp_path / "gap.npy"), "--frame-rate", "60", "--out",
                   str(tmp_path / "gap_spikes.npy")], cwd=tmp_path, timeout=300)
    assert "neuron(s) 2 (100 frames) have NaN/Inf stretches" in out.stderr
    spikes = np.load(tmp_path / "gap_spikes.npy")
    assert np.isnan(spikes[2, 600:700]).all() and np.isfinite(spikes[2, 100:500]).all()
    assert np.isfinite(spikes[[0, 1, 3], 100:-100]).all()
    assert (tmp_path / "gap_spikes.png").is_file() and "noise level nu median" in out.stdout
    far = run_cli(["infer", str(run_dir), str(tmp_path / "gap.npy"), "--frame-rate", "500", "--out",
                   str(tmp_path / "far.npy"), "--no-plot"], cwd=tmp_path, timeout=300)
    assert "frame rate 500 Hz is far outside the rates the model was trained for (60-60 Hz, model rate 25 Hz)" in far.stderr


def test_infer_rejects_bad_input_naming_the_file(demo_run: tuple[Path, Path], tmp_path: Path) -> None:
    from vislab.families.spikes.infer import run_infer

    run_dir, _ = demo_run
    cases = {
        "one_d.npy": (np.zeros(500), r"one_d\.npy: expected a 2-D array \(num_neurons, T\), got shape \(500,\) "
                                     r"\(one neuron\? reshape it to \(1, T\)\)"),
        "empty.npy": (np.zeros((3, 0)), r"empty\.npy: the traces array is empty \(shape \(3, 0\)\)"),
    }
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(ConfigError, match=message):
            run_infer(run_dir, tmp_path / name, 60.0, tmp_path / "x.npy")
    gt = np.zeros((1, 1), dtype=[("fluo_time", object), ("fluo_mean", object), ("events_AP", object)])
    savemat(tmp_path / "gt.mat", {"CAttached": gt})
    with pytest.raises(ConfigError, match=r"gt\.mat: a CASCADE ground-truth file \(CAttached\)"):
        run_infer(run_dir, tmp_path / "gt.mat", 60.0, tmp_path / "x.npy")
    savemat(tmp_path / "two.mat", {"a": np.zeros((2, 100)), "b": np.zeros((2, 100))})
    with pytest.raises(ConfigError, match=r"two\.mat: expected one 2-D numeric variable .* name it with --key"):
        run_infer(run_dir, tmp_path / "two.mat", 60.0, tmp_path / "x.npy")
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"], f["b"] = np.zeros((2, 100)), np.zeros((2, 100))
    with pytest.raises(ConfigError, match=r"two\.h5: holds 2 datasets \(a, b\); name one with --key"):
        run_infer(run_dir, tmp_path / "two.h5", 60.0, tmp_path / "x.npy")
    with pytest.warns(UserWarning, match=r"dead\.npy: neuron\(s\) 1 have no finite frames"):
        traces = _simulated_traces(neurons=2)
        traces[1] = np.nan
        np.save(tmp_path / "dead.npy", traces)
        run_infer(run_dir, tmp_path / "dead.npy", 60.0, tmp_path / "dead_spikes.npy", plot=False)
    bad = run_cli(["infer", str(run_dir), str(tmp_path / "one_d.npy"), "--frame-rate", "60", "--out",
                   str(tmp_path / "x.npy")], cwd=tmp_path, check=False, timeout=300)
    assert bad.returncode == 2 and "one_d.npy: expected a 2-D array" in bad.stderr


def test_crossval_runs_one_fold_per_dataset(tmp_path: Path) -> None:
    root = tmp_path / "sim"
    out = run_cli(["crossval", str(DEMO), f"data.root={root}", f"runs_root={tmp_path / 'runs'}", "trainer.max_epochs=1",
                   "data.limit_train_samples=64", "data.simulate.duration_s=40", "logger.wandb=false",
                   "trainer.progress_bar=none"], cwd=tmp_path, timeout=900, env={"OMP_NUM_THREADS": "1"})
    assert "| SIM00-tau0.4s | 12 |" in out.stdout and "| SIM01-tau1.2s | 12 |" in out.stdout
    result = json.loads((tmp_path / "runs" / "spikes-demo-lodo" / "crossval.json").read_text())
    assert set(result["datasets"]) == {"SIM00-tau0.4s", "SIM01-tau1.2s"}
    fold = json.loads((tmp_path / "runs" / "spikes-demo-lodo" / "SIM00-tau0_4s" / "summary.json").read_text())
    assert fold["test_report"]["datasets"]["SIM00-tau0.4s"]["neurons_unseen"] == 12  # all held out
    assert "SIM01-tau1.2s" not in fold["test_report"]["datasets"]


def test_shard_cli_detects_the_cascade_layout(tmp_path: Path) -> None:
    from calcium_fixtures import write_cascade_tree

    from vislab.data.manifest import split_dirs
    from vislab.train.cli import main

    src = write_cascade_tree(tmp_path / "gt", {"DS01-OGB1": (12.0, 3), "DS02-GCaMP6f": (60.0, 3)})
    assert main(["shard", str(src), "--out", str(tmp_path / "out"), "--workers", "1", "--val-fraction", "0.34"]) == 0
    assert set(split_dirs(tmp_path / "out")) == {"train", "val", "test"}
    assert main(["shard", str(src), "--out", str(tmp_path / "out2"), "--format", "cascade", "--spam", "1"]) == 2
