"""Real JPEGs (../shared/data/imagenette): shard with the CLI, verify, and train/evaluate a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, needs_shared, run_cli

from vislab.data.manifest import Manifest


@pytest.fixture(scope="module")
def imagenette_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = needs_shared("imagenette")
    out = tmp_path_factory.mktemp("imagenette") / "shards"
    run_cli(["shard", str(src), "--out", str(out), "--shard-size-mb", "8", "--workers", "2"], cwd=out.parent)
    return out


@pytest.mark.realdata
def test_sharding_keeps_every_image_and_class(imagenette_root: Path) -> None:
    src = needs_shared("imagenette")
    for split in ("train", "val"):
        m = Manifest.load(imagenette_root / split)
        assert m.num_samples == len(list((src / split).rglob("*.JPEG")))
        assert m.meta["classes"] == sorted(p.name for p in (src / "train").iterdir())
        assert m.schema["jpg"]["kind"] == "jpeg" and len(m.shards) > 1
    res = run_cli(["shard", "verify", str(imagenette_root)], cwd=imagenette_root)
    assert res.stdout.count(": ok") == 2


@pytest.mark.realdata
def test_short_fit_on_real_jpegs(imagenette_root: Path, tmp_path: Path) -> None:
    from vislab.train.config import load_config
    from vislab.train.run import fit

    cfg = load_config(REPO / "configs" / "classify" / "imagenette_resnet18.yaml", [
        f"data.root={imagenette_root}", f"runs_root={tmp_path}", "trainer.devices=1", "trainer.max_epochs=1",
        "data.limit_train_samples=128", "data.batch_size=32", "data.num_workers=2", "data.train_crop=64",
        "data.eval_resize=72", "data.eval_crop=64", "logger.wandb=false", "trainer.progress_bar=none",
        "model.name=tiny_cnn",
    ])
    summary = json.loads((fit(cfg) / "summary.json").read_text())
    assert summary["global_step"] == 4 and summary["test_split"] == "val"
    assert 0.0 <= summary["test_metrics"]["test/acc1"] <= 1.0 and summary["test_metrics"]["test/loss"] > 0
