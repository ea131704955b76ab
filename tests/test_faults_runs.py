"""Run directories: a new run never reuses one, and a resume is refused or applied, never silently wrong.

Issue 15 case 3: `run_id=` of a finished run trained from scratch into its directory (mixed last.ckpt /
last-v1.ckpt, summary.json replaced); resuming with `optim.lr=...` kept the checkpoint's learning rate while
config.yaml recorded the new one; resuming with another `data.root` trained on and replaced summary.json.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli

from vislab.core.errors import ConfigError
from vislab.train.resume import check_resume
from vislab.train.run import load_run_config

CFG = str(REPO / "configs" / "classify" / "digits.yaml")


@pytest.fixture(scope="module")
def finished(digits_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run (one process)."""
    runs = tmp_path_factory.mktemp("runs")
    run_cli(["fit", CFG, f"data.root={digits_root}", f"runs_root={runs}", "run_id=done", "model.name=tiny_cnn",
             "trainer.devices=1", "trainer.max_epochs=1", "data.num_workers=0", "logger.wandb=false",
             "trainer.progress_bar=none"], cwd=runs)
    return runs / "digits" / "done"


@pytest.fixture(scope="module")
def other_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits with half of the training images: valid for the config, other data for the run."""
    from vislab.data.importers.digits import write_digits_tree
    from vislab.data.importers.imagefolder import run as shard_imagefolder

    base = tmp_path_factory.mktemp("other")
    write_digits_tree(base / "png")
    for i, png in enumerate(sorted((base / "png" / "train").rglob("*.png"))):
        if i % 2:
            png.unlink()
    shard_imagefolder(base / "png", base / "shards", shard_size_mb=0.02, workers=1, log=lambda s: None)
    return base / "shards"


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_a_new_run_with_the_run_id_of_a_finished_run_is_refused(finished: Path, digits_root: Path) -> None:
    before = _snapshot(finished)
    res = run_cli(["fit", CFG, f"data.root={digits_root}", f"runs_root={finished.parent.parent}", "run_id=done",
                   "model.name=tiny_cnn", "trainer.devices=1", "logger.wandb=false"], cwd=finished.parent, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"{finished} already holds a finished run" in res.stderr and f"vislab fit {finished}" in res.stderr
    assert _snapshot(finished) == before  # nothing written: no last-v1.ckpt, summary.json as it was


def test_resume_with_other_data_is_refused_before_any_work(finished: Path, other_root: Path) -> None:
    before = _snapshot(finished)
    res = run_cli(["fit", str(finished), f"data.root={other_root}"], cwd=finished.parent, check=False)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"data.root={other_root} (the run trained on data.root=" in res.stderr
    assert re.search(r"the shard manifests of (\w+, )*train(, \w+)* differ from those the run trained on", res.stderr)
    assert _snapshot(finished) == before


def test_resume_refuses_another_seed_or_optimizer(finished: Path) -> None:
    cfg = load_run_config(finished, ["seed=7", "optim.name=sgd"])
    with pytest.raises(ConfigError) as e:
        check_resume(cfg, finished / "checkpoints" / "last.ckpt")
    assert len(e.value.problems) == 2
    assert "seed=7, the run was trained with seed=0" in e.value.problems[0]
    assert "optim.name='sgd', the run's optimizer state is for optim.name='adamw'" in e.value.problems[1]


def test_resume_applies_a_changed_learning_rate_and_records_it(finished: Path, tmp_path: Path) -> None:
    run = tmp_path / "digits" / "done"
    shutil.copytree(finished, run)
    res = run_cli(["fit", str(run), "optim.lr=0.0004", "trainer.max_epochs=2"], cwd=tmp_path)
    assert "resume at step 20: applied optim.lr 0.004 -> 0.0004 to the restored optimizer" in res.stderr
    ck = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ck["global_step"] == 40 and not list(run.glob("checkpoints/last-v*.ckpt"))  # a moved run: same files
    groups = ck["optimizer_states"][0]["param_groups"]
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.0004] * len(groups))  # before: 0.004, the old one
    assert ck["lr_schedulers"][0]["base_lrs"] == pytest.approx([0.0004] * len(groups))
    assert "lr: 0.0004" in (run / "config.yaml").read_text()  # the config that ran ...
    assert any("lr: 0.004\n" in p.read_text() for p in run.glob("config.*.yaml"))  # ... and the earlier one
