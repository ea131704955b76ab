"""Fast checks of the textures family: statistics, networks, colour, configs and bad input (no optimisation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vislab.core.config import load_config
from vislab.core.errors import ConfigError
from vislab.families.textures import FAMILY
from vislab.families.textures.features import RandomMultiScale, fft_size, vgg_layer_names
from vislab.families.textures.losses import (
    gram,
    gram_distance,
    match_color_histogram,
    rgb_to_yiq,
    symmetric_gram_distance,
    yiq_to_rgb,
)
from vislab.families.textures.metrics import two_crops
from vislab.families.textures.synthesize import cli, schema_of

REPO = Path(__file__).resolve().parents[2]


def test_family_contract() -> None:
    assert FAMILY.name == "textures" and "synthesize" in FAMILY.verbs
    FAMILY.runtime()  # must not raise (export tooling builds every family's runtime)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "textures").glob("*.yaml")), ids=lambda p: p.name)
def test_configs_load(path: Path) -> None:
    cfg = load_config(path, [], schema_of)
    assert cfg.task == "textures"


def test_gram_and_distances() -> None:
    f = torch.randn(2, 4, 5, 6)
    g = gram(f)
    assert g.shape == (2, 4, 4) and torch.allclose(g, g.transpose(1, 2))
    assert torch.allclose(g[0], f[0].flatten(1) @ f[0].flatten(1).T / 30)
    assert torch.allclose(gram(f, torch.ones(1, 1, 5, 6)), g)
    assert gram_distance(g, g).abs().max() < 1e-6 and symmetric_gram_distance(g, g).abs().max() < 1e-6
    assert torch.allclose(symmetric_gram_distance(g, g.flip(0)), symmetric_gram_distance(g.flip(0), g))


def test_random_net_is_seeded_and_fft_equals_direct_convolution() -> None:
    x = torch.rand(1, 3, 20, 24)
    a = RandomMultiScale([3, 23], 4, seed=1, layers=["all", "k23"])
    assert torch.equal(a(x)["all"], RandomMultiScale([3, 23], 4, seed=1, layers=["all"])(x)["all"])
    # the FFT path (k=23) is the linear convolution: conv2d with the flipped kernel, 'same' padding
    w = a.fft_weight.flip(-1, -2)
    direct = F.relu(F.conv2d((x - a.mean) / a.std, w, padding=11))
    assert torch.allclose(a(x)["k23"], direct, atol=1e-4)
    assert a(x)["all"].shape == (1, 8, 20, 24)
    assert fft_size(310) == 320 and fft_size(59) == 60


def test_unknown_layer_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid: all, k3, k5"):
        RandomMultiScale([3, 5], 2, 0, ["k7"])
    assert vgg_layer_names()["relu4_2"] == "features.22" and vgg_layer_names()["pool4"] == "features.27"


def test_colour_transforms() -> None:
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-5)
    style, content = torch.rand(1, 3, 16, 16) * 0.5, torch.rand(1, 3, 16, 16) * 0.3 + 0.6
    matched = match_color_histogram(style, content)
    assert torch.allclose(matched.mean((2, 3)), content.mean((2, 3)), atol=0.02)
    a, b = two_crops(torch.rand(1, 3, 40, 100))
    assert a.shape[-2:] == b.shape[-2:] == (40, 40)


def _cli(*args: str) -> int:
    return cli([*args])


def test_bad_input_exits_2_before_optimising(tmp_path: Path, photos: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(REPO / "configs" / "textures" / "random.yaml")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    assert _cli("texture", str(junk), "--config", cfg, "--out", str(tmp_path / "o")) == 2
    assert "junk.jpg: unreadable" in capsys.readouterr().err
    from PIL import Image

    Image.new("RGB", (10, 10)).save(tmp_path / "tiny.png")
    assert _cli("texture", str(tmp_path / "tiny.png"), "--config", cfg, "--out", str(tmp_path / "o")) == 2
    assert "10x10 px is below data.min_side=32" in capsys.readouterr().err
    assert _cli("texture", str(photos["china"]), "--config", cfg, "--out", str(tmp_path / "o"),
                "model.layers=[k4]") == 2
    assert "unknown layer 'k4'" in capsys.readouterr().err
    Image.new("L", (50, 40)).save(tmp_path / "mask.png")
    style = str(REPO / "configs" / "textures" / "style.yaml")
    assert _cli("style", str(photos["china"]), str(photos["flower"]), "--config", style, "--out", str(tmp_path / "o"),
                f"loss.masks=[{tmp_path / 'mask.png'}]") == 2
    assert "mask.png is 50x40 px, the content image" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*.png"))


def test_vgg_without_cached_weights_names_the_cache_file(tmp_path: Path, photos: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    cfg = str(REPO / "configs" / "textures" / "gatys.yaml")
    assert _cli("texture", str(photos["china"]), "--config", cfg, "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "not in the torch hub cache" in err and "vgg19-dcbb9e9d.pth" in err
