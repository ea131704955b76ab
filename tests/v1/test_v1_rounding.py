"""Float rounding in real V1 recordings (issue 15): tiny negative responses are set to 0 at import, counted in
the manifest and the import summary, and the Poisson fit trains; real negative data stays an error naming
session, trial and neuron.

The fixture mimics the public Sinz-lab recording that was refused: a simulated session in the same layout
whose zero responses are partly written as values down to -5.5e-8. End to end through `vislab shard` and a
tiny `vislab fit` (1 process, 1 epoch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli

from vislab.data.manifest import Manifest
from vislab.families.v1.simulate import SimulationConfig, simulate
from vislab.train.cli import main

DEMO = REPO / "configs" / "v1" / "demo.yaml"
TINY_FIT = ["trainer.devices=1", "trainer.max_epochs=1", "data.batch_size=32", "data.num_workers=0",
            "model.readout_init_trials=100", "logger.wandb=false", "trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("rounding")
    cfg = SimulationConfig(sessions=1, neurons=12, train=160, validation=32, test_images=8, repeats=2, seed=3,
                           rounding_negatives=0.3)
    return simulate(base / "src", cfg)[0]


def _responses(session: Path) -> np.ndarray:
    files = sorted((session / "data" / "responses").glob("*.npy"), key=lambda p: int(p.stem))
    return np.stack([np.load(f) for f in files])


def _shard_responses(root: Path) -> np.ndarray:
    import tarfile
    from io import BytesIO

    values = []
    for split in ("train", "val", "test"):
        for shard in sorted((root / split).glob("*.tar")):
            with tarfile.open(shard) as tar:
                for m in tar.getmembers():
                    if m.name.endswith(".responses.npy"):
                        values.append(np.load(BytesIO(tar.extractfile(m).read())))  # type: ignore[union-attr]
    return np.stack(values)


def test_rounding_is_zeroed_counted_and_the_poisson_fit_trains(session: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    raw = _responses(session)
    tiny = int((raw < 0).sum())
    assert tiny > 50 and raw.min() > -6e-8  # the fixture holds rounding only
    data = tmp_path / "shards"
    assert main(["shard", str(session), "--out", str(data), "--workers", "1"]) == 0
    log = capsys.readouterr().out
    assert f"{tiny} negative response value(s)" in log and "set to 0" in log

    info = Manifest.load(data / "train").meta["sessions"][session.name]
    assert info["rounding"]["values_set_to_zero"] == tiny and "negative_responses" not in info
    assert min(info["statistics"]["responses"]["min"]) >= 0
    written = _shard_responses(data)
    assert written.min() == 0.0 and len(written) == len(raw)

    fit = run_cli(["fit", str(DEMO), f"data.root={data}", f"runs_root={tmp_path / 'runs'}", *TINY_FIT],
                  cwd=tmp_path, timeout=600)
    summary = json.loads((Path(fit.stdout.strip().splitlines()[-1]) / "summary.json").read_text())
    assert np.isfinite(summary["test_metrics"]["test/corr"])


def test_real_negative_responses_are_refused_naming_session_trial_and_neuron(
        session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    src = tmp_path / session.name
    shutil.copytree(session, src)
    tiers = np.load(src / "meta" / "trials" / "tiers.npy")
    trial = int(np.flatnonzero(tiers == "train")[5])
    r = np.load(src / "data" / "responses" / f"{trial}.npy")
    r[4] = -0.75  # a real negative value (e.g. dF/F), far beyond rounding
    np.save(src / "data" / "responses" / f"{trial}.npy", r)
    data = tmp_path / "shards"
    assert main(["shard", str(src), "--out", str(data), "--workers", "1"]) == 0
    info = Manifest.load(data / "train").meta["sessions"][src.name]
    assert info["negative_responses"]["trial"] == trial and info["negative_responses"]["neuron"] == 4
    capsys.readouterr()
    assert main(["fit", str(DEMO), f"data.root={data}", f"runs_root={tmp_path / 'runs'}", *TINY_FIT]) == 2
    err = capsys.readouterr().err
    assert f"session {src.name} has negative responses beyond float rounding" in err
    assert f"trial {trial} neuron 4 (unit id 5): -0.75" in err
    assert not (tmp_path / "runs").exists()  # refused before any run directory
