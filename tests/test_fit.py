"""End to end on digits: 2-process gloo DDP fit, tracking, resume, evaluation, export, NaN stop."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli

from vislab.train.wandb_reader import read_run

CFG = str(REPO / "configs" / "classify" / "digits.yaml")


def _fit_args(root: Path, runs: Path, *extra: str) -> list[str]:
    return ["fit", CFG, f"data.root={root}", f"runs_root={runs}", "trainer.max_epochs=4", "trainer.save_top_k=-1",
            "data.num_workers=1", "trainer.log_every_n_steps=5", *extra]


@pytest.fixture(scope="module")
def ddp_run(digits_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    runs = tmp_path_factory.mktemp("runs")
    res = run_cli(_fit_args(digits_root, runs), cwd=runs, timeout=400)
    return Path(res.stdout.strip().splitlines()[-1]), res.stderr


def _rows(run_dir: Path, version: int = 0) -> list[dict[str, str]]:
    with open(run_dir / "logs" / f"version_{version}" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_ddp_fit_learns_and_records_the_run(ddp_run: tuple[Path, str]) -> None:
    run_dir, _ = ddp_run
    losses = [float(r["train/loss"]) for r in _rows(run_dir) if r.get("train/loss")]
    assert len(losses) >= 6 and sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3  # the loss falls
    s = _summary(run_dir)
    assert s["num_processes"] == 2 and s["test_split"] == "test"
    assert s["test_metrics"]["test/acc1"] > 0.8  # chance is 0.1
    assert Path(s["best_checkpoint"]).is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert set(s["data_manifests_sha256"]) == {"train", "val", "test"}
    assert s["versions"]["torch"] and s["wall_time_s"] > 0 and s["global_step"] == 4 * 20
    saved = (run_dir / "config.yaml").read_text()
    assert "max_epochs: 4" in saved and f"run_id: {run_dir.name}" in saved  # the config that ran


def test_wandb_offline_run_holds_the_logged_metrics(ddp_run: tuple[Path, str]) -> None:
    run_dir, stderr = ddp_run
    assert "wandb: WARNING" not in stderr  # e.g. the deprecated `anonymous` setting Lightning passes
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1  # rank 0 only
    run = read_run(offline[0])
    assert run["run_id"] == (run_dir / "wandb_id.txt").read_text().strip()
    keys = set().union(*run["history"])
    assert {"train/loss", "val/acc1"} <= keys and any(k.startswith("lr") for k in keys)
    val = [row["val/acc1"] for row in run["history"] if "val/acc1" in row]
    assert len(val) == 4 and max(val) > 0.8
    assert run["config"]["model"]["name"] == "small_cnn"  # the resolved config is logged
    assert run["summary"]["final/test/acc1"] == pytest.approx(_summary(run_dir)["test_metrics"]["test/acc1"])


def test_resume_from_mid_training_checkpoint(ddp_run: tuple[Path, str], tmp_path: Path) -> None:
    run_dir, _ = ddp_run
    copy = tmp_path / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, copy)
    mid = next((copy / "checkpoints").glob("epoch001-*.ckpt"))
    mid_step = torch.load(mid, weights_only=True, map_location="cpu")["global_step"]
    assert mid_step == 40
    res = run_cli(["fit", str(copy), f"resume={mid}", "trainer.max_epochs=5"], cwd=tmp_path, timeout=400)
    assert Path(res.stdout.strip().splitlines()[-1]) == copy
    s = _summary(copy)
    assert s["resumed_from"] == str(mid) and s["global_step"] == 5 * 20  # continues the step count
    steps = [int(r["step"]) for r in _rows(copy, version=1) if r.get("train/loss")]
    assert min(steps) > mid_step  # no step re-run from zero
    runs = [read_run(d) for d in sorted((copy / "wandb").glob("offline-run-*"))]
    assert len(runs) == 2 and runs[0]["run_id"] == runs[1]["run_id"]  # the same wandb run continues


def test_accuracy_is_the_same_with_one_and_two_processes(ddp_run: tuple[Path, str], digits_root: Path, tmp_path: Path) -> None:
    run_dir, _ = ddp_run
    best = _summary(run_dir)["best_checkpoint"]
    base = ["test", CFG, f"data.root={digits_root}", f"ckpt={best}", "data.batch_size=64"]
    one = json.loads(run_cli([*base, "trainer.devices=1"], cwd=tmp_path).stdout.strip().splitlines()[-1])
    two = json.loads(run_cli([*base, "trainer.devices=2"], cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert one["test/acc1"] == two["test/acc1"] == pytest.approx(_summary(run_dir)["test_metrics"]["test/acc1"])
    assert one["test/loss"] == pytest.approx(two["test/loss"], rel=1e-6)


def test_checkpoint_from_another_model_is_refused(ddp_run: tuple[Path, str], digits_root: Path, tmp_path: Path) -> None:
    run_dir, _ = ddp_run
    best = _summary(run_dir)["best_checkpoint"]
    res = run_cli(["test", CFG, f"data.root={digits_root}", f"ckpt={best}", "model.name=tiny_cnn"], cwd=tmp_path,
                  check=False)
    assert res.returncode == 2 and "model.name='small_cnn'" in res.stderr and "model.name='tiny_cnn'" in res.stderr


def test_export_round_trip_gives_identical_logits(ddp_run: tuple[Path, str], tmp_path: Path) -> None:
    from vislab.families.classify.module import ClassifierModule, example_input
    from vislab.models.exported import load_exported
    from vislab.train.run import read_checkpoint_config

    run_dir, _ = ddp_run
    run_cli(["export", str(run_dir), "--out", str(tmp_path / "exp")], cwd=tmp_path)
    model, info = load_exported(tmp_path / "exp")
    assert info["class_names"] == [str(i) for i in range(10)] and info["input_size"] == [1, 8, 8]
    assert info["metrics"]["test/acc1"] > 0.8 and info["max_abs_diff"] == 0.0
    best = _summary(run_dir)["best_checkpoint"]
    cfg, meta = read_checkpoint_config(best)
    module = ClassifierModule(cfg, meta)
    module.load_state_dict(torch.load(best, weights_only=True, map_location="cpu")["state_dict"])
    x = example_input(cfg, info, 16)
    with torch.no_grad():
        assert torch.equal(module.eval()(x), model(x))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(digits_root: Path, tmp_path: Path) -> None:
    from torch import nn

    from vislab.models import registry
    from vislab.train.config import load_config
    from vislab.train.run import fit
    from vislab.train.trainer import NonFiniteLossError

    class PoisonAfter(nn.Module):
        """A tiny CNN whose output turns NaN after 30 training forwards (a diverging run)."""

        def __init__(self, num_classes: int, in_channels: int = 1):
            super().__init__()
            self.net = registry.create_model("tiny_cnn", num_classes=num_classes, in_channels=in_channels)
            self.calls = 0

        def forward(self, x):
            self.calls += int(self.training)
            out = self.net(x)
            return out * float("nan") if self.calls > 30 else out

    registry._OWN["poison_after_30"] = lambda num_classes, in_channels=3, **kw: PoisonAfter(num_classes, in_channels)
    try:
        cfg = load_config(CFG, [f"data.root={digits_root}", f"runs_root={tmp_path}", "model.name=poison_after_30",
                                "trainer.devices=1", "trainer.max_epochs=3", "data.num_workers=0",
                                "logger.wandb=false", "trainer.progress_bar=none"])
        with pytest.raises(NonFiniteLossError, match=r"NaN/Inf at step 31 .*last good checkpoint: .*last.ckpt"):
            fit(cfg)
    finally:
        del registry._OWN["poison_after_30"]
    last = next(tmp_path.rglob("last.ckpt"))
    ck = torch.load(last, weights_only=True, map_location="cpu")
    assert ck["global_step"] == 20  # written at the end of epoch 0, before the NaN
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
