"""The real-data configs (Klindt 2017, Gaussian readout) train and test end to end on a tiny recording.

One process, in-process `fit` and `evaluate` (what `vislab fit` / `vislab test` call), the configs' own
architectures; a few optimizer steps only: this checks the path, not the accuracy (test_v1_e2e does that).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from vislab.families.v1.importers.static_v1 import run as import_static
from vislab.families.v1.simulate import SimulationConfig, simulate
from vislab.train.config import load_config
from vislab.train.run import evaluate, fit


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("v1real")
    simulate(base / "src", SimulationConfig(sessions=2, neurons=12, train=48, validation=16, test_images=4, repeats=4))
    import_static(base / "src", base / "shards", workers=1, log=lambda s: None)
    return base / "shards"


@pytest.mark.parametrize("name", ["gaussian", "klindt2017"])
def test_real_config_fits_and_tests(name: str, root: Path, tmp_path: Path) -> None:
    overrides = [f"data.root={root}", f"runs_root={tmp_path}", "data.batch_size=16", "data.num_workers=0",
                 "data.shuffle_buffer=32", "trainer.max_epochs=1", "trainer.devices=1", "trainer.accelerator=cpu",
                 "logger.wandb=false", "trainer.progress_bar=none", "model.readout_init_trials=32"]
    cfg = load_config(REPO / "configs" / "v1" / f"{name}.yaml", overrides)
    run_dir = fit(cfg)
    ckpt = sorted((run_dir / "checkpoints").glob("epoch*.ckpt"))[-1]
    metrics = evaluate(load_config(REPO / "configs" / "v1" / f"{name}.yaml", [*overrides, f"ckpt={ckpt}"]), "test")
    assert set(metrics["sessions"]) == {"sim-v1-s0", "sim-v1-s1"}
    assert metrics["all"]["num_neurons"] == 24 and "test/oracle/sim-v1-s1" in metrics
    assert all(-1 <= v <= 1 for v in metrics["sessions"]["sim-v1-s0"]["per_neuron"]["corr"])
