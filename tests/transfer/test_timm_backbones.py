"""timm backbones by name (`model.backbone.name=timm/<arch>`): timm's own interface and feature pyramid,
weights from the Hugging Face hub cache or a file, one clear line where they cannot be reached."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from conftest import REPO
from safetensors.torch import save_file
from transfer_data import image_shards, single_thread, tiny  # noqa: F401  (fixture)

from vislab.core.errors import ConfigError
from vislab.models.backbones import TimmBackbone, build_backbone, load_backbone
from vislab.models.pretrained import check_weights, describe_weights
from vislab.models.registry import unknown_model_message
from vislab.train.config import load_config

pytestmark = pytest.mark.usefixtures("single_thread")
REPO_ID = "timm/resnet18.a1_in1k"  # timm's default pretrained tag of resnet18


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache, and no network (huggingface_hub reads the constant at call time)."""
    cache = tmp_path / "hf"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _put_in_cache(cache: Path, state: dict[str, torch.Tensor]) -> None:
    """The hub cache's layout: refs/main names the snapshot that holds the file."""
    repo = cache / f"models--{REPO_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))


def test_feature_pyramid_from_timm_feature_info() -> None:
    bb = build_backbone("timm/resnet18")
    assert isinstance(bb, TimmBackbone) and bb.layer_names() == ["act1", "layer1", "layer2", "layer3", "layer4"]
    fe = bb.feature_extractor(["layer4", "layer2"])  # any order: outputs follow the request
    assert fe.channels == {"layer4": 512, "layer2": 128} and fe.strides == {"layer4": 32, "layer2": 8}
    out = fe(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in out] == [(1, 512, 2, 3), (1, 128, 8, 12)]
    assert not any(p.requires_grad for p in fe.parameters()) and not fe.train().body.training  # frozen = eval
    assert all(p.requires_grad for p in bb.parameters())  # a copy: the backbone itself is untouched
    with pytest.raises(ValueError, match="unknown layer 'layer5'.*feature_info has act1, layer1"):
        bb.feature_extractor(["layer5"])


def test_weights_from_the_hub_cache_with_timms_metadata(hf_cache: Path) -> None:
    reference = timm.create_model("resnet18")
    _put_in_cache(hf_cache, reference.state_dict())
    bb = load_backbone("timm/resnet18")
    assert torch.equal(bb.body.state_dict()["conv1.weight"], reference.state_dict()["conv1.weight"])
    assert torch.equal(bb.classifier.weight, reference.fc.weight) and bb.num_classes == 1000
    assert bb.meta.input_size == 224 and bb.meta.resize == 235  # timm's crop_pct 0.95
    assert bb.meta.mean == [0.485, 0.456, 0.406] and len(bb.meta.class_names or []) == 1000
    assert check_weights("timm/resnet18", "DEFAULT", download=False) is None
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # same numbers as timm's own network
        assert torch.allclose(bb.eval()(x), reference.eval()(x), atol=1e-5)


def test_missing_weights_are_one_line_naming_the_cache(hf_cache: Path) -> None:
    msg = check_weights("timm/resnet18", "DEFAULT", download=False)
    assert msg and str(hf_cache / "models--timm--resnet18.a1_in1k") in msg and "downloads are disabled" in msg
    with pytest.raises(ConfigError) as e:  # HF_HUB_OFFLINE: no ~25 s of hub retries
        load_backbone("timm/resnet18")
    assert len(e.value.problems) == 1 and str(hf_cache) in e.value.problems[0]
    with pytest.raises(ValueError, match="valid DEFAULT or .*a1_in1k"):
        describe_weights("timm/resnet18", "nosuch")
    assert "did you mean 'timm/resnet18'" in (unknown_model_message("timm/resnet18x") or "")


def test_weights_from_a_file_with_a_new_head(tmp_path: Path) -> None:
    reference = timm.create_model("resnet18", num_classes=10)
    save_file({f"module.{k}": v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "w.safetensors"))
    bb = load_backbone(tmp_path / "w.safetensors", arch="timm/resnet18", key_map={"module.": ""}, num_classes=3)
    assert bb.num_classes == 3  # the file's 10-class head is left out, a fresh one follows
    assert torch.equal(bb.body.state_dict()["layer1.0.conv1.weight"], reference.state_dict()["layer1.0.conv1.weight"])


def test_a_transfer_run_on_a_timm_backbone_exports_and_reloads(tmp_path: Path) -> None:
    from vislab.train.export import export_run  # torch, onnx: only the tests that export
    from vislab.train.run import fit  # Lightning: only the tests that train

    images = image_shards(tmp_path / "img", {"train": 8, "val": 4})
    cfg = load_config(REPO / "configs/transfer/linear_probe_lite0.yaml",
                      [*tiny(images, tmp_path / "runs", "trainer.max_epochs=1"), "model.backbone.name=timm/resnet18"])
    run = fit(cfg)
    out = export_run(run, tmp_path / "bb", ["safetensors", "onnx"], backbone_only=True, with_head=True)
    assert json.loads((out / "model.json").read_text())["spec"]["kwargs"]["name"] == "timm/resnet18"
    bb = load_backbone(out)
    assert isinstance(bb, TimmBackbone) and bb.num_classes == len(bb.meta.class_names or []) > 1
    with pytest.raises(ConfigError, match="unknown timm architecture 'timm/resnet18x'"):
        load_config(REPO / "configs/transfer/linear_probe_lite0.yaml", [*tiny(images, tmp_path / "runs"),
                                                                         "model.backbone.name=timm/resnet18x"])
