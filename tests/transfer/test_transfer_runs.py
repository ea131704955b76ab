"""`task: transfer` end to end on tiny shards: probe fast path = slow path, fine-tuning groups, freezing,
gradual unfreezing (also under 2-process DDP), LP-FT head initialisation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, run_cli
from transfer_data import image_shards, single_thread, tiny  # noqa: F401  (fixture)

PROBE = REPO / "configs" / "transfer" / "linear_probe_lite0.yaml"
FINETUNE = REPO / "configs" / "transfer" / "finetune_lite0.yaml"
pytestmark = pytest.mark.usefixtures("single_thread")


FT_GROUPS = ["model.lr_groups=[{layers: [body.layer4.*], lr_scale: 0.1}]", "model.freeze=[body.conv1.*,body.bn1.*]",
             "model.backbone_lr_scale=0.01"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    request.getfixturevalue("single_thread")  # before the fits, not after
    return image_shards(tmp_path_factory.mktemp("transfer_data"), {"train": 16, "val": 8})


def _fit(path: Path, overrides: list[str]) -> dict[str, Any]:

    from vislab.train.config import load_config
    from vislab.train.run import fit

    run_dir = fit(load_config(path, overrides))
    return json.loads((run_dir / "summary.json").read_text())


def _head(summary: dict[str, Any]) -> torch.Tensor:
    state = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    return state["model.classifier.weight"]


def test_probe_on_cached_features_equals_the_probe_end_to_end(root: Path, tmp_path: Path) -> None:
    common = tiny(root, tmp_path, "trainer.max_epochs=4", "optim.lr=0.01")
    fast = _fit(PROBE, [*common, "experiment=fast"])
    cache = list((tmp_path / "cache").iterdir())
    assert len(cache) == 1 and (cache[0] / "complete.json").is_file()
    slow = _fit(PROBE, [*common, "experiment=slow", "model.cache_features=false"])
    a, b = fast["test_metrics"]["test/acc1"], slow["test_metrics"]["test/acc1"]
    assert a > 0.6 and abs(a - b) <= 0.01  # chance is 1/3
    # same samples in the same order, same features: the same head, up to float rounding
    assert torch.allclose(_head(fast), _head(slow), atol=1e-3)
    # the cache is reused, and other preprocessing gets its own
    again = _fit(PROBE, [*common, "experiment=again", "trainer.max_epochs=1"])
    assert again["global_step"] == 6 and len(list((tmp_path / "cache").iterdir())) == 1
    _fit(PROBE, [*common, "experiment=other", "trainer.max_epochs=1", "data.eval_crop=24", "data.eval_resize=28"])
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_finetune_groups_learning_rates_frozen_layers_and_batchnorm(root: Path, tmp_path: Path) -> None:
    from vislab.families.transfer.module import TransferModule
    from vislab.train.config import load_config

    cfg = load_config(FINETUNE, tiny(root, tmp_path, *FT_GROUPS, "model.freeze_bn=false"))
    module = TransferModule(cfg, {"num_classes": 3, "classes": ["a", "b", "c"]})
    groups = {g["name"]: g for g in module.param_groups()}
    assert {n: g["lr_scale"] for n, g in groups.items()} == {
        "head_decay": 1.0, "head_no_decay": 1.0, "group0_decay": 0.1, "group0_no_decay": 0.1,
        "group1_decay": 0.01, "group1_no_decay": 0.01}
    assert groups["head_no_decay"]["weight_decay"] == 0.0 and groups["head_decay"]["weight_decay"] == cfg.optim.weight_decay
    in_groups = {id(p) for g in groups.values() for p in g["params"]}
    named = dict(module.model.named_parameters())
    assert id(named["body.conv1.weight"]) not in in_groups and not named["body.conv1.weight"].requires_grad
    assert id(named["body.layer4.1.conv2.weight"]) in {id(p) for p in groups["group0_decay"]["params"]}
    module.train()
    body = module.model.body
    assert not body.get_submodule("bn1").training  # a frozen layer's BN keeps its statistics
    assert body.get_submodule("layer1.0.bn1").training  # a trainable one adapts (freeze_bn=false here)
    module.cfg.model.freeze_bn = True
    module.train()
    assert not body.get_submodule("layer1.0.bn1").training


class Snapshots:
    """Parameters at the end of every training epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def __call__(self, module: Any) -> None:
        self.states.append({k: v.detach().clone() for k, v in module.model.state_dict().items()})


def test_gradual_unfreezing_trains_the_head_then_the_top_then_the_rest(root: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from vislab.families.transfer.module import TransferModule

    snaps = Snapshots()
    monkeypatch.setattr(TransferModule, "on_train_epoch_end", lambda self: snaps(self), raising=False)
    _fit(FINETUNE, tiny(root, tmp_path, *FT_GROUPS, "model.gradual_unfreeze=[1,2]", "trainer.max_epochs=3",
                        "data.limit_train_samples=16", "optim.lr=0.01"))
    e0, e1, e2 = snaps.states

    def changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], key: str) -> bool:
        return not torch.equal(a[key], b[key])

    assert changed(e0, e1, "classifier.weight") and changed(e1, e2, "classifier.weight")
    assert not changed(e0, e1, "body.layer1.0.conv1.weight") and changed(e1, e2, "body.layer1.0.conv1.weight")
    assert changed(e0, e1, "body.layer4.0.conv1.weight")  # the top group joins at epoch 1
    assert not changed(e0, e2, "body.conv1.weight") and not changed(e0, e2, "body.bn1.running_mean")  # frozen


def test_gradual_unfreezing_under_two_process_ddp(root: Path, tmp_path: Path) -> None:
    res = run_cli(["fit", str(FINETUNE), *tiny(root, tmp_path, *FT_GROUPS, "model.gradual_unfreeze=[1,2]",
                                                  "trainer.max_epochs=3", "trainer.devices=2", "trainer.accelerator=cpu")],
                  cwd=tmp_path, timeout=600)
    run_dir = Path(res.stdout.strip().splitlines()[-1])
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["num_processes"] == 2 and s["epochs"] == 3 and 0 <= s["test_metrics"]["test/acc1"] <= 1


def test_head_initialised_from_a_probe_export(root: Path, tmp_path: Path) -> None:
    from vislab.families.transfer.module import TransferModule
    from vislab.train.config import load_config
    from vislab.train.export import export_run

    probe = _fit(PROBE, tiny(root, tmp_path, "trainer.max_epochs=1", "experiment=probe"))
    export_run(Path(probe["run_dir"]), tmp_path / "probe_export")
    cfg = load_config(FINETUNE, tiny(root, tmp_path, *FT_GROUPS, f"model.head_init={tmp_path / 'probe_export'}"))
    module = TransferModule(cfg, {"num_classes": 3})
    assert torch.equal(module.model.classifier.weight, _head(probe))
    from vislab.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"head does not fit: classifier.weight \(3, 512\) vs \(5, 512\)"):
        TransferModule(load_config(FINETUNE, tiny(root, tmp_path, *FT_GROUPS, "model.num_classes=5",
                                                  f"model.head_init={tmp_path / 'probe_export'}")), {"num_classes": 3})
