"""The V1 path through the CLI on simulated ground truth, two sessions sharing one core, 2 processes (gloo):

vislab simulate v1 -> vislab shard -> vislab fit configs/v1/demo.yaml (DDP) -> vislab test (JSON) -> vislab export,
then: test correlation >= 90% of the oracle, readout positions within 2 px of the true RF centres for >= 90% of
the neurons, per-session metrics in the summary and the test JSON, export outputs identical to the checkpoint's,
and the readout/filter pictures inside the offline wandb run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli

from vislab.families.v1.simulate import GROUND_TRUTH
from vislab.train.wandb_reader import read_run

SESSIONS = ("sim-v1-s0", "sim-v1-s1")
NEURONS = 64  # per session: 128 neurons in all


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("v1e2e")
    src, data, runs = base / "sessions", base / "shards", base / "runs"
    run_cli(["simulate", "v1", str(src), "--sessions", "2", "--neurons", str(NEURONS), "--seed", "1"], cwd=base)
    run_cli(["shard", str(src), "--out", str(data), "--workers", "2"], cwd=base)
    fit = run_cli(["fit", str(REPO / "configs" / "v1" / "demo.yaml"), f"data.root={data}", f"runs_root={runs}"],
                  cwd=base, timeout=900, env={"WANDB_DIR": str(base)})
    run_dir = Path(fit.stdout.strip().splitlines()[-1])
    export = base / "export"
    run_cli(["export", str(run_dir), "--out", str(export)], cwd=base)
    return {"base": base, "src": src, "data": data, "run": run_dir, "export": export}


def test_multi_session_fit_reaches_the_oracle(trained: dict[str, Path]) -> None:
    summary = json.loads((trained["run"] / "summary.json").read_text())
    assert summary["num_processes"] == 2
    report = summary["test_report"]
    for s in SESSIONS:
        assert report["sessions"][s]["num_neurons"] == NEURONS
        assert len(report["sessions"][s]["per_neuron"]["corr"]) == NEURONS
        assert f"test/corr/{s}" in summary["test_metrics"] and f"test/oracle/{s}" in summary["test_metrics"]
    fraction = report["all"]["fraction_of_oracle"]
    print(f"test corr {report['all']['corr']:.3f}, oracle {report['all']['oracle']:.3f}, fraction {fraction:.3f}")
    assert fraction >= 0.9, report["all"]


def test_readout_positions_are_the_receptive_fields(trained: dict[str, Path]) -> None:
    from vislab.models.exported import load_exported

    model, info = load_exported(trained["export"])
    errors = []
    for s in SESSIONS:
        gt = np.load(trained["src"] / s / GROUND_TRUTH)
        xy = model.rf_positions(s).numpy()
        errors.append(np.hypot(xy[:, 0] - gt["center_x"], xy[:, 1] - gt["center_y"]))
    err = np.concatenate(errors)
    print(f"position error: median {np.median(err):.2f} px, within 2 px: {np.mean(err < 2):.1%}")
    assert np.mean(err < 2.0) >= 0.9


def test_cli_test_prints_per_session_json_and_export_matches(trained: dict[str, Path]) -> None:
    summary = json.loads((trained["run"] / "summary.json").read_text())
    out = run_cli(["test", str(REPO / "configs" / "v1" / "demo.yaml"), f"data.root={trained['data']}",
                   f"ckpt={summary['best_checkpoint']}", "trainer.devices=1"], cwd=trained["base"])
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(metrics["sessions"]) == set(SESSIONS)
    assert metrics["test/corr"] == pytest.approx(summary["test_metrics"]["test/corr"], abs=1e-4)
    assert metrics["sessions"]["sim-v1-s1"]["oracle"] > 0

    from vislab.core.checkpoints import load_checkpoint
    from vislab.families.v1.module import V1Module, example_input
    from vislab.models.exported import load_exported
    from vislab.train.run import read_checkpoint_config

    model, info = load_exported(trained["export"])
    cfg, meta = read_checkpoint_config(summary["best_checkpoint"])
    module = V1Module(cfg, meta)
    module.load_state_dict(load_checkpoint(summary["best_checkpoint"])["state_dict"])
    cfg.data.root = str(trained["data"])
    x = example_input(cfg, info, 8)
    with torch.no_grad():
        assert torch.equal(model(x), module.model.eval()(x))
        assert torch.equal(model(x, "sim-v1-s1"), module.model(x, "sim-v1-s1"))
    assert info["sessions"]["sim-v1-s1"]["output_slice"] == [NEURONS, 2 * NEURONS]


def test_pictures_land_in_the_offline_wandb_run(trained: dict[str, Path]) -> None:
    runs = sorted((trained["run"] / "wandb").glob("offline-run-*"))
    assert runs, "no offline wandb run"
    keys = {k for row in read_run(runs[-1])["history"] for k in row}
    assert {"v1/filters/filenames", "v1/positions/filenames", "val/corr"} <= keys  # wandb.Image records
    pngs = [p.name for p in runs[-1].rglob("*.png")]
    assert any(n.startswith("filters") for n in pngs) and any(n.startswith("positions") for n in pngs)


def test_bad_data_and_foreign_checkpoint_are_clear_errors(trained: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "sim-v1-s0"
    shutil.copytree(trained["src"] / "sim-v1-s0", bad, ignore=shutil.ignore_patterns("ground_truth.npz"))
    np.save(bad / "data" / "responses" / "11.npy", np.ones(NEURONS + 1))
    r = run_cli(["shard", str(bad), "--out", str(tmp_path / "out")], cwd=tmp_path, check=False)
    assert r.returncode == 2 and "session sim-v1-s0 trial 11" in r.stderr and f"{NEURONS} neurons" in r.stderr

    one = tmp_path / "one"
    run_cli(["shard", str(trained["src"] / "sim-v1-s1"), "--out", str(one)], cwd=tmp_path)
    summary = json.loads((trained["run"] / "summary.json").read_text())
    r = run_cli(["test", str(REPO / "configs" / "v1" / "demo.yaml"), f"data.root={one}",
                 f"ckpt={summary['best_checkpoint']}", "trainer.devices=1"], cwd=tmp_path, check=False)
    assert r.returncode == 2 and "checkpoint was trained on sessions" in r.stderr
