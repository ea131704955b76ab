"""The backbone interface and the weight sources (offline package, torch hub cache, files with key maps)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
from conftest import needs_shared
from transfer_data import single_thread  # noqa: F401  (fixture)

from vislab.core.errors import ConfigError
from vislab.models.backbones import build_backbone, load_backbone

# one per layout kind (ConvNeXt's 2-D head and DenseNet's functional pooling were checked by hand: slow to build)
FAMILIES = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "small_cnn", "efficientnet_lite0", "timm/resnet18"]

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_layout_gives_features_pre_logits_and_a_resettable_head(arch: str) -> None:
    torch.manual_seed(0)
    bb = build_backbone(arch, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fmap = bb.forward_features(x)
        emb = bb.forward_head(fmap, pre_logits=True)
        logits = bb(x)
    assert fmap.ndim == 4 and emb.shape == (2, bb.num_features) and logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    bb.train()
    bb(x).sum().backward()  # gradients reach the first layer
    first = next(p for n, p in bb.named_parameters() if n.startswith("body."))
    assert first.grad is not None and torch.isfinite(first.grad).all()
    bb.reset_classifier(0)
    assert bb.num_classes == 0 and bb.eval()(x).shape == (2, bb.num_features)
    bb.reset_classifier(7)
    assert bb(x).shape == (2, 7)


def test_feature_extractor_gives_named_layers_with_channels_and_strides() -> None:
    bb = build_backbone("resnet18")
    fe = bb.feature_extractor(["layer2", "layer4"])
    assert fe.channels == {"layer2": 128, "layer4": 512} and fe.strides == {"layer2": 8, "layer4": 32}
    out = fe(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in out] == [(1, 128, 8, 12), (1, 512, 2, 3)]
    assert not any(p.requires_grad for p in fe.parameters()) and not fe.train().body.training  # frozen = eval
    with pytest.raises(ValueError, match="unknown layer 'layer5'.*layer_names"):
        bb.feature_extractor(["layer5"])
    lite = build_backbone("efficientnet_lite0").feature_extractor(["_blocks.4", "_blocks.10", "_swish_1"])
    assert lite.strides == {"_blocks.4": 8, "_blocks.10": 16, "_swish_1": 32}
    assert lite.channels == {"_blocks.4": 40, "_blocks.10": 112, "_swish_1": 1280}


def test_train_and_eval_behaviour_survive_deepcopy_and_pickle() -> None:
    # one FX graph for both modes: drop-connect / stochastic depth / BN decide at run time
    bb = build_backbone("efficientnet_lite0", num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = bb(x)
        assert torch.equal(copy.deepcopy(bb).eval()(x), ref)
        assert torch.equal(pickle.loads(pickle.dumps(bb)).eval()(x), ref)
    bb.train()
    with torch.no_grad():
        assert not torch.allclose(bb(x), ref)  # training mode really is different (BN batch stats, drop-connect)


def test_offline_lite0_weights_carry_their_metadata_and_classify_real_images() -> None:
    root = needs_shared("imagenette", "val")
    from torchvision.io import read_image
    from torchvision.transforms import v2

    bb = load_backbone("efficientnet_lite0").eval()
    m = bb.meta
    assert m.mean == pytest.approx([127 / 255] * 3) and m.std == pytest.approx([128 / 255] * 3)  # TF (x*255-127)/128
    assert m.input_size == 224 and len(m.class_names or []) == 1000 and bb.num_classes == 1000
    files = sorted((root / "n01440764").glob("*.JPEG"))[:3] + sorted((root / "n03888257").glob("*.JPEG"))[:3]
    crop = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])
    x = torch.stack([crop(read_image(str(f))) for f in files]).float() / 255
    x = (x - torch.tensor(m.mean).view(1, 3, 1, 1)) / torch.tensor(m.std).view(1, 3, 1, 1)
    with torch.no_grad():
        names = [m.class_names[i] for i in bb(x).argmax(1)]  # type: ignore[index]
    assert names[:3] == ["tench"] * 3 and names[3:].count("parachute") >= 2


def test_torchvision_weights_missing_offline_name_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(ConfigError, match=f"not in the torch hub cache \\({cache}\\) and downloads are disabled"):
        load_backbone("ResNet18_Weights.IMAGENET1K_V1", download=False)

    def offline(*a: object, **k: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError, match=f"download of .* failed .* not in the torch hub cache \\({cache}\\)"):
        load_backbone("ResNet18_Weights.IMAGENET1K_V1")
    # a file in the cache is used without any network
    cache.parent.mkdir(parents=True, exist_ok=True)
    reference = build_backbone("resnet18", num_classes=1000)
    import torchvision

    net = torchvision.models.resnet18()
    torch.save(net.state_dict(), cache)
    bb = load_backbone("ResNet18_Weights.IMAGENET1K_V1", download=False)
    assert bb.arch == "resnet18" and bb.meta.class_names and bb.meta.input_size == 224 and bb.meta.resize == 256
    assert torch.equal(bb.body.state_dict()["conv1.weight"], net.state_dict()["conv1.weight"])
    assert not torch.equal(reference.body.state_dict()["conv1.weight"], net.state_dict()["conv1.weight"])


def test_weights_files_with_a_key_map_and_clear_errors_for_the_wrong_architecture(tmp_path: Path) -> None:
    import torchvision
    from safetensors.torch import save_file

    net = torchvision.models.resnet18(num_classes=10)
    prefixed = {f"module.encoder.{k}": v for k, v in net.state_dict().items()}
    save_file(prefixed, str(tmp_path / "w.safetensors"))
    bb = load_backbone(tmp_path / "w.safetensors", arch="resnet18", key_map={"module.encoder.": ""}, num_classes=0)
    assert torch.equal(bb.body.state_dict()["layer1.0.conv1.weight"], net.state_dict()["layer1.0.conv1.weight"])
    with pytest.raises(ConfigError, match="missing tensors \\['conv1.weight'.*rename keys with model.backbone.key_map"):
        load_backbone(tmp_path / "w.safetensors", arch="resnet18", num_classes=0)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ConfigError, match="missing tensors \\['layer1.2.conv1.weight'"):
        load_backbone(tmp_path / "w.pt", arch="resnet34", num_classes=0)
    with pytest.raises(ConfigError, match="shape mismatch \\['fc.weight \\(10, 512\\) vs model \\(1000, 512\\)"):
        load_backbone(tmp_path / "w.pt", arch="resnet18")  # keeping the head: its size must fit
