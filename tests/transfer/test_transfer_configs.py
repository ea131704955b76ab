"""Every transfer/saliency config validates; settings that contradict the weights are errors before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO
from transfer_data import fixation_shards, image_shards, single_thread  # noqa: F401  (fixture)

from vislab.core.errors import ConfigError
from vislab.train.config import load_config

CONFIGS = sorted((REPO / "configs" / "transfer").glob("*.yaml"))

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("transfer_cfg")
    return {"transfer": image_shards(base / "img", {"train": 2, "val": 1}),
            "saliency": fixation_shards(base / "fix", n_images=8)}


def test_the_five_configs_exist() -> None:
    assert {p.stem for p in CONFIGS} >= {"linear_probe_lite0", "finetune_lite0", "linear_probe_resnet50",
                                         "finetune_resnet50", "saliency_osie"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates(path: Path, roots: dict[str, Path]) -> None:
    task = "saliency" if "saliency" in path.stem else "transfer"
    cfg = load_config(path, [f"data.root={roots[task]}"])
    assert cfg.task == task
    if task == "transfer":
        assert cfg.data.mean is None and cfg.data.eval_crop is None  # normalisation and size come with the weights
        assert (cfg.model.mode == "probe") == ("probe" in path.stem)


def _problems(path: str, root: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(REPO / "configs" / "transfer" / path, [f"data.root={root}", *overrides])
    return str(e.value)


def test_values_contradicting_the_weights_are_errors(roots: dict[str, Path]) -> None:
    msg = _problems("finetune_lite0.yaml", roots["transfer"], "data.mean=[0.485,0.456,0.406]", "data.eval_crop=256",
                    "model.keep_head=true")
    assert "'data.mean'=[0.485, 0.456, 0.406] contradicts the weights' mean" in msg
    assert "'data.eval_crop'=256 contradicts the weights' 224" in msg
    assert "'model.keep_head'=true but the data's classes (3, e.g. 'class0') are not the weights' 1000 classes" in msg
    # the weights' own values are accepted
    load_config(REPO / "configs" / "transfer" / "finetune_lite0.yaml",
                [f"data.root={roots['transfer']}", f"data.mean=[{127 / 255},{127 / 255},{127 / 255}]", "data.eval_crop=224"])


def test_finetune_settings_are_checked_by_name(roots: dict[str, Path]) -> None:
    msg = _problems("finetune_lite0.yaml", roots["transfer"], "model.freeze=[body.layer9.*]", "model.gradual_unfreeze=[2,1]")
    assert "'model.freeze' pattern 'body.layer9.*' matches no parameter of efficientnet_lite0" in msg
    assert "'model.gradual_unfreeze' must be increasing" in msg
    msg = _problems("linear_probe_lite0.yaml", roots["transfer"], "data.augment=true", "model.backbone.name=resnet5O")
    assert "cached features (model.cache_features=true) have no augmentation" in msg
    assert "unknown architecture 'resnet5O'" in msg


def test_weights_and_data_problems_are_reported_before_any_work(roots: dict[str, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    msg = _problems("linear_probe_resnet50.yaml", roots["transfer"], "model.backbone.download=false")
    assert f"not in the torch hub cache ({tmp_path}/hub/checkpoints/resnet50-11ad3fa6.pth)" in msg
    msg = _problems("linear_probe_lite0.yaml", roots["transfer"], "model.backbone.weights=ResNet50_Weights.IMAGENET1K_V2")
    assert "unknown weights 'ResNet50_Weights.IMAGENET1K_V2' for efficientnet_lite0" in msg
    msg = _problems("saliency_osie.yaml", roots["transfer"], "model.layers=[_blocks.99]")
    assert "holds 'image' shards, this task reads 'fixations' shards" in msg
    msg = _problems("saliency_osie.yaml", roots["saliency"], "model.layers=[_blocks.99]", "data.image_size=[100,128]")
    assert "'_blocks.99' is not a layer of efficientnet_lite0" in msg and "multiples of 32" in msg
