"""`task: saliency` end to end on a tiny fixation set: cached features, metrics, maps logged to wandb offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO
from transfer_data import fixation_shards, single_thread, tiny_saliency_overrides  # noqa: F401  (fixture)

from vislab.train.wandb_reader import read_run

CFG = REPO / "configs" / "transfer" / "saliency_osie.yaml"
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def saliency_run(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    request.getfixturevalue("single_thread")  # before the fits, not after
    from vislab.train.config import load_config
    from vislab.train.run import fit

    base = tmp_path_factory.mktemp("saliency")
    root = fixation_shards(base / "data", n_images=24)
    cfg = load_config(CFG, tiny_saliency_overrides(root, base / "runs", base / "cache", "trainer.max_epochs=12"))
    return fit(cfg)


def test_the_readout_beats_the_centre_bias_on_held_out_images(saliency_run: Path) -> None:
    s = json.loads((saliency_run / "summary.json").read_text())
    m = s["test_metrics"]
    assert s["test_split"] == "test" and set(m) >= {"test/ig", "test/ll", "test/auc", "test/nss", "test/ll_cb"}
    assert m["test/ig"] > 0.2  # bits per fixation over the centre bias: the blobs are found
    assert m["test/ll"] == pytest.approx(m["test/ll_cb"] + m["test/ig"], abs=1e-4)  # IG = LL - LL(centre bias)
    assert m["test/auc"] > m["test/auc_cb"] and m["test/nss"] > m["test/nss_cb"]
    # the centre bias was estimated from the training fixations only, and recorded
    from vislab.core.checkpoints import load_checkpoint

    meta = load_checkpoint(s["best_checkpoint"])["vislab"]["meta"]
    assert meta["center_bias"]["num_images"] == 12 and meta["center_bias"]["num_fixations"] == 12 * 24


def test_saliency_maps_are_logged_as_images_in_the_offline_wandb_run(saliency_run: Path) -> None:
    offline = sorted((saliency_run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    pngs = sorted((offline[0] / "files" / "media" / "images").rglob("*.png"))
    assert len(pngs) >= 4  # 4 example maps per validation
    rows = [r for r in read_run(offline[0])["history"] if "val/saliency/_type" in r]
    assert rows and rows[-1]["val/saliency/_type"] == "images/separated" and rows[-1]["val/saliency/count"] == 4
    logged = {Path(f).name for r in rows for f in r["val/saliency/filenames"]}
    assert logged <= {p.name for p in pngs} and len(logged) == 4 * len(rows)
    assert any("val/ig" in r for r in read_run(offline[0])["history"])


def test_the_uncached_path_runs_the_backbone_every_step(saliency_run: Path, tmp_path: Path) -> None:
    from vislab.train.config import load_config
    from vislab.train.run import fit

    root = Path(json.loads((saliency_run / "summary.json").read_text())["run_dir"]).parent.parent.parent / "data" / "shards"
    cfg = load_config(CFG, tiny_saliency_overrides(root, tmp_path, tmp_path / "cache", "trainer.max_epochs=1",
                                                   "model.cache_features=false", "logger.wandb=false"))
    s = json.loads((fit(cfg) / "summary.json").read_text())
    assert s["global_step"] == 3 and s["test_metrics"]["test/auc"] > 0.0
    assert not (tmp_path / "cache").exists()  # nothing was cached
