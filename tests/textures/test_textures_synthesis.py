"""End-to-end synthesis on real photos (scikit-learn's china.jpg and flower.jpg), tiny sizes and few steps.

- texture: with the random multi-scale net, the result's Gram distance to its source (on EfficientNet-Lite0,
  a different network) is below the distance between two crops of the source;
- style with colour preservation: the result keeps the content's chroma histogram while its Gram statistics
  move toward the style;
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
from vislab.families.textures.losses import gram, rgb_to_yiq, symmetric_gram_distance
from vislab.families.textures.synthesize import main, schema_of

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "textures"


def test_texture_beats_two_crops_on_lite0(tmp_path: Path, photos: dict[str, Path]) -> None:
    out = tmp_path / "out"
    assert main(["texture", str(photos["china"]), "--config", str(CONFIGS / "random.yaml"), "--out", str(out),
                 "data.image_size=96", "synth.steps=60", "model.channels_per_size=16"]) == 0
    rec = json.loads((out / "china.json").read_text())
    m = rec["metrics"]
    assert m["result_vs_source"]["mean"] < m["crop_vs_crop"]["mean"], m
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
    common = ["--config", str(CONFIGS / "style.yaml"), "data.image_size=64", "synth.steps=40", "loss.content_weight=0.3"]
    results = {}
    for color in ("none", "luminance"):
        out = tmp_path / color
        assert main(["style", str(content), str(style), "--out", str(out), f"loss.color={color}", *common]) == 0
        results[color] = _tensor(out / "china.png")
    size = (results["none"].shape[-1], results["none"].shape[-2])
    c, s = _tensor(content, size), _tensor(style, size)
    hist_c = _chroma_hist(c)
    d_none = np.abs(_chroma_hist(results["none"]) - hist_c).sum()
    d_lum = np.abs(_chroma_hist(results["luminance"]) - hist_c).sum()
    assert d_lum < 0.5 * d_none, (d_lum, d_none)

    cfg = load_config(CONFIGS / "style.yaml", [], schema_of)
    from vislab.families.textures.features import build_features

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
