"""End-to-end synthesis on real photos (scikit-learn's china.jpg and flower.jpg), tiny sizes and few steps.

- texture: with the random multi-scale net, the result's Gram distance to its source is far below two crops'
  on the synthesising net, and below two crops' and its start's on Lite0's first block (a different network);
- style with colour preservation (luminance-only, and histogram matching): the result keeps the content's
  chroma histogram while its Gram statistics move toward the style;
- a shard set split over 2 processes (torchrun, gloo-free: each rank optimises its own images): every
  source synthesised exactly once.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vislab.core.config import load_config
from vislab.data.manifest import Manifest, ShardInfo, sha256_file
from vislab.families.textures.features import build_features
from vislab.families.textures.losses import gram, gram_distance, rgb_to_yiq, symmetric_gram_distance
from vislab.families.textures.metrics import two_crops
from vislab.families.textures.synthesize import main, schema_of, to_tensor

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "textures"


def test_texture_statistics_match_beyond_the_start(tmp_path: Path, photos: dict[str, Path]) -> None:
    """At 64 px and 40 steps the random net's Gram matrix is matched far below the crop-vs-crop distance, and
    on Lite0's first block (stride 2) the result is nearer its source than two crops of it are and nearer than
    its random-phase start. The full claim (all evaluation layers up to stride 16) needs the paper's 1024
    maps and thousands of iterations: measured at 256 px by the command in the README's textures section, not here."""
    out = tmp_path / "out"
    assert main(["texture", str(photos["china"]), "--config", str(CONFIGS / "random.yaml"), "--out", str(out),
                 "data.image_size=64", "synth.steps=40", "model.channels_per_size=16", "synth.scales=[]"]) == 0
    rec = json.loads((out / "china.json").read_text())
    m = rec["metrics"]
    first = "_blocks.0"
    assert m["result_vs_source"][first] < m["crop_vs_crop"][first], m
    assert m["result_vs_source"][first] < m["init_vs_source"][first], m
    cfg = load_config(CONFIGS / "random.yaml", ["model.channels_per_size=16"], schema_of)
    net = build_features(cfg.model)
    source = to_tensor(Image.open(photos["china"]).convert("RGB"), 64)
    with torch.no_grad():
        crops = [gram(net(c)["all"]) for c in two_crops(source)]
    crop_vs_crop = float(gram_distance(crops[0], crops[1])[0])
    assert rec["gram_distance"]["all"] < 0.1 * crop_vs_crop, (rec["gram_distance"], crop_vs_crop)
    curve = [loss for _, loss in rec["loss_curve"]]
    assert curve[-1] < 0.2 * curve[0]
    for f in ("china.png", "china_pair.png", "china_loss.png", "summary.json", "config.yaml"):
        assert (out / f).is_file(), f
    assert list((tmp_path / "wandb").glob("offline-run-*"))  # WANDB_DIR = tmp_path (tests/conftest.py)


def _chroma_hist(x: torch.Tensor) -> np.ndarray:
    iq = rgb_to_yiq(x)[0, 1:].flatten(1).numpy()
    h, _, _ = np.histogram2d(iq[0], iq[1], bins=16, range=[[-0.6, 0.6], [-0.6, 0.6]])
    return h / h.sum()


def _tensor(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    im = Image.open(path).convert("RGB")
    if size:
        im = im.resize(size, Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def test_style_colour_preservation(tmp_path: Path, photos: dict[str, Path]) -> None:
    content, style = photos["china"], photos["flower"]
    common = ["--config", str(CONFIGS / "style.yaml"), "data.image_size=48", "synth.steps=25", "loss.content_weight=0.3",
              "logger.wandb=false"]
    results = {}
    for color in ("none", "luminance", "histogram"):
        out = tmp_path / color
        assert main(["style", str(content), str(style), "--out", str(out), f"loss.color={color}", *common]) == 0
        results[color] = _tensor(out / "china.png")
    size = (results["none"].shape[-1], results["none"].shape[-2])
    c, s = _tensor(content, size), _tensor(style, size)
    hist_c = _chroma_hist(c)
    d_none = np.abs(_chroma_hist(results["none"]) - hist_c).sum()
    d_lum = np.abs(_chroma_hist(results["luminance"]) - hist_c).sum()
    d_hist = np.abs(_chroma_hist(results["histogram"]) - hist_c).sum()
    assert d_lum < 0.5 * d_none, (d_lum, d_none)
    assert d_hist < d_none, (d_hist, d_none)  # the style's colours mapped to the content's first

    cfg = load_config(CONFIGS / "style.yaml", [], schema_of)
    net = build_features(cfg.model)
    with torch.no_grad():
        g = {k: {n: gram(f) for n, f in net(x).items()} for k, x in
             {"content": c, "style": s, "result": results["luminance"]}.items()}
    to_style = {k: float(np.mean([symmetric_gram_distance(g[k][n], g["style"][n]).item() for n in cfg.model.layers]))
                for k in ("content", "result")}
    assert to_style["result"] < to_style["content"], to_style


def _shard_set(root: Path, images: list[tuple[str, Image.Image]], per_shard: int) -> None:
    root.mkdir(parents=True)
    shards = []
    for i in range(0, len(images), per_shard):
        name = f"shard-{i // per_shard:06d}.tar"
        with tarfile.open(root / name, "w") as tar:
            for key, im in images[i:i + per_shard]:
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=90)
                info = tarfile.TarInfo(f"{key}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
        shards.append(ShardInfo(name, len(images[i:i + per_shard]), (root / name).stat().st_size,
                                sha256_file(root / name)))
    Manifest(num_samples=len(images), shards=shards, schema={"jpg": {"kind": "jpeg"}}).save(root)


def test_shard_set_over_two_processes_each_source_once(tmp_path: Path, photos: dict[str, Path]) -> None:
    base = [Image.open(p).convert("RGB") for p in photos.values()]
    images = [(f"src{i:02d}", base[i % 2].crop((40 * i, 20 * i, 40 * i + 200, 20 * i + 160))) for i in range(5)]
    _shard_set(tmp_path / "shards", images, per_shard=2)  # 3 shards: 2 + 2 + 1
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vislab.families.textures.synthesize", "texture", "--data", str(tmp_path / "shards"),
           "--config", str(CONFIGS / "random.yaml"), "--out", str(out), "data.image_size=32",
           "synth.steps=3", "model.channels_per_size=4", "eval.network=null", "data.batch_size=2"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["names"] == [k for k, _ in images]  # each exactly once
    ranks = {r["name"]: r["rank"] for r in summary["results"]}
    assert set(ranks.values()) == {0, 1}
    assert (out / "contact_sheet.png").is_file()
