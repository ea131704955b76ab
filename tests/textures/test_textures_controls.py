"""The control options on tiny images and few steps, each checked by the property it exists for:
spatial masks (Gatys et al. 2017), coarse-to-fine scale control, Adam instead of L-BFGS."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from vislab.core.config import load_config
from vislab.families.textures.features import build_features
from vislab.families.textures.losses import gram, gram_distance
from vislab.families.textures.synthesize import main, schema_of, to_tensor

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "textures"
# a small random multi-scale net: every term is cheap at 32-64 px
SMALL_NET = ["model.channels_per_size=4", "model.filter_sizes=[3,5,7,11]", "eval.network=null", "logger.wandb=false"]


def _final_loss(out: Path, name: str) -> tuple[float, float]:
    curve = json.loads((out / f"{name}.json").read_text())["loss_curve"]
    return curve[0][1], curve[-1][1]


def test_spatial_masks_give_each_region_its_own_style(tmp_path: Path, photos: dict[str, Path]) -> None:
    content = Image.open(photos["china"]).convert("RGB")
    left = Image.new("L", content.size, 0)
    left.paste(255, (0, 0, content.width // 2, content.height))
    right = Image.eval(left, lambda v: 255 - v)
    left.save(tmp_path / "left.png")
    right.save(tmp_path / "right.png")
    out = tmp_path / "out"
    styles = [photos["flower"], photos["china"]]  # left half: flower, right half: china
    args = ["style", str(photos["china"]), *map(str, styles), "--config", str(CONFIGS / "style.yaml"), "--out", str(out),
            "model.network=random_multiscale", "model.layers=[all]", "model.content_layer=k3", "loss.content_weight=0",
            "loss.color=none", "synth.init=content", "synth.steps=30", "data.image_size=48",
            f"loss.masks=[{tmp_path / 'left.png'},{tmp_path / 'right.png'}]", *SMALL_NET]
    assert main(args) == 0
    result = to_tensor(Image.open(out / "china.png").convert("RGB"), 48)  # (1, 3, 48, 72)
    cfg = load_config(CONFIGS / "style.yaml", args[args.index("model.network=random_multiscale"):], schema_of)
    net = build_features(cfg.model)
    with torch.no_grad():
        style_g = [gram(net(to_tensor(Image.open(p).convert("RGB"), 48))["all"]) for p in styles]
        w = result.shape[-1] // 2
        halves = [gram(net(result[..., :w])["all"]), gram(net(result[..., w:])["all"])]
    d = [[float(gram_distance(h, s)) for s in style_g] for h in halves]  # d[region][style]
    assert d[0][0] < d[0][1] and d[1][1] < d[1][0], d


def test_coarse_to_fine_has_the_size_and_a_lower_loss(tmp_path: Path, photos: dict[str, Path]) -> None:
    common = ["texture", str(photos["flower"]), "--config", str(CONFIGS / "random.yaml"), "data.image_size=64",
              "synth.steps=15", *SMALL_NET]
    assert main([*common, "--out", str(tmp_path / "c2f"), "synth.scales=[32]"]) == 0
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert Image.open(tmp_path / "c2f" / "flower.png").size == (64, 64)
    curve = json.loads((tmp_path / "c2f" / "flower.json").read_text())["loss_curve"]
    assert curve[-1][0] == 30  # 15 steps at 32 px, then 15 at 64 px
    assert _final_loss(tmp_path / "c2f", "flower")[1] < _final_loss(tmp_path / "one", "flower")[1]


def test_adam_reduces_the_loss(tmp_path: Path, photos: dict[str, Path]) -> None:
    out = tmp_path / "adam"
    assert main(["texture", str(photos["flower"]), "--config", str(CONFIGS / "random.yaml"), "--out", str(out),
                 "synth.optimizer=adam", "synth.lr=0.02", "synth.steps=20", "data.image_size=48", *SMALL_NET]) == 0
    first, last = _final_loss(out, "flower")
    assert last < 0.5 * first, (first, last)
    assert Image.open(out / "flower.png").size == (48, 48)
