"""`vislab synthesize`: textures and style transfer by optimising images (the textures family's verb).

    vislab synthesize texture SRC.jpg [...] --config configs/textures/random.yaml --out DIR [key=value ...]
    vislab synthesize style CONTENT.jpg STYLE.jpg [STYLE2.jpg ...] --config configs/textures/style.yaml --out DIR
    vislab synthesize texture --data SHARDS --config ... --out DIR     # every image of a shard set, once

Three ways to run:
    one CPU process:       vislab synthesize texture china.jpg --config configs/textures/random.yaml --out out/
    two processes (gloo):  torchrun --standalone --nproc_per_node 2 -m vislab.families.textures.synthesize \\
                               texture --data shards/val --config configs/textures/random.yaml --out out/
    a Slurm job:           srun --ntasks N python -m vislab.families.textures.synthesize texture --data ... --out ...

A shard set is dealt out over the processes (RANK/WORLD_SIZE of torchrun, SLURM_PROCID/SLURM_NTASKS) by the
exact-once evaluation reader; each process optimises its own images (no gradient is shared), then rank 0
collects every process's records from DIR/records/ and writes the contact sheet, summary.json and the wandb run.
Per source: DIR/<name>.png, <name>_pair.png (source | result), <name>_loss.png, <name>.json (loss curve,
per-layer Gram distance on the synthesising net, the evaluation metrics). Bad input raises ConfigError
before any optimisation (exit 2).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from vislab.core.config import load_config
from vislab.core.dist import global_rank
from vislab.core.errors import ConfigError
from vislab.families.textures.schema import TexturesConfig, check_config

if TYPE_CHECKING:  # annotations only: torch is imported when work starts, not at CLI start-up
    import torch

USAGE = __doc__.split("Three ways")[0]


@dataclass
class Source:
    name: str
    image: torch.Tensor
    """(1, 3, H, W) in [0, 1], shorter side = the config's source side."""


# --------------------------------------------------------------------------------------------- input
def schema_of(task: str, source: str) -> tuple[type[TexturesConfig], Any]:
    if task != "textures":
        raise ConfigError([f"{source}: 'task' is {task}; `vislab synthesize` needs a textures config (task: textures)"])
    return TexturesConfig, check_config


def world_size() -> int:
    for var in ("WORLD_SIZE", "SLURM_NTASKS"):
        if var in os.environ:
            return int(os.environ[var])
    return 1


def open_image(path: Path, min_side: int, what: str = "image") -> Image.Image:
    """A readable RGB image at least `min_side` on its shorter side, or ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError([f"{what} not found: {path}"])
    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError([f"{what} {path}: unreadable ({type(e).__name__}: {str(e)[:120]})"]) from e
    if min(image.size) < min_side:
        raise ConfigError([f"{what} {path}: {image.width}x{image.height} px is below data.min_side={min_side}"])
    return image


def to_tensor(image: Image.Image, side: int) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) in [0, 1], shorter side resized (antialiased) to `side`."""
    import torch  # torch: kept off the CLI's start-up path
    import torch.nn.functional as F  # torch: kept off the CLI's start-up path

    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    scale = side / min(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def shard_sources(cfg: TexturesConfig, rank: int, size: int) -> list[Source]:
    """This rank's share of a shard set (exact-once reader), decoded and checked."""
    from vislab.data.images import image_bytes  # torch and Lightning: kept off the CLI's start-up path
    from vislab.data.manifest import (  # torch and Lightning: kept off the CLI's start-up path
        ShardError,
        check_shard_set,
    )
    from vislab.data.pipeline import EvalStream  # torch and Lightning: kept off the CLI's start-up path

    try:
        manifest = check_shard_set(cfg.data.root)
    except ShardError as e:
        raise ConfigError([f"'data.root': {e}"]) from e
    stream = EvalStream(urls=manifest.urls(cfg.data.root), counts=[s.count for s in manifest.shards],
                        decode=lambda s: s, batch_size=1, rank=rank, world_size=size, on_error=cfg.data.on_error,
                        collate=lambda batch: batch[0])
    out = []
    for sample in stream:
        where = f"sample {sample['__key__']} of {sample.get('__url__')}"
        try:
            image = Image.open(io.BytesIO(image_bytes(sample))).convert("RGB")
        except (UnidentifiedImageError, OSError, ShardError) as e:
            raise ConfigError([f"{where}: unreadable image ({e})"]) from e
        if min(image.size) < cfg.data.min_side:
            raise ConfigError([f"{where}: {image.width}x{image.height} px is below data.min_side={cfg.data.min_side}"])
        out.append(Source(str(sample["__key__"]).replace("/", "_"), to_tensor(image, cfg.source_side())))
    return out


def seed_of(cfg: TexturesConfig, name: str, sample: int) -> int:
    """The initial noise of (source, sample): fixed by the run seed, not by the rank or batch it lands in."""
    return zlib.crc32(f"{cfg.seed}/{name}/{sample}".encode())


# ---------------------------------------------------------------------------------------------- verb
def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vislab synthesize", description=USAGE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["texture", "style"])
    p.add_argument("args", nargs="*", help="images (texture: sources; style: CONTENT STYLE [STYLE ...]), then key=value")
    p.add_argument("--config", required=True, help="a textures YAML config (configs/textures/*.yaml)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--data", help="a shard set of texture sources (sets data.root)")
    a = p.parse_intermixed_args(argv)  # images, options and key=value in any order
    overrides = [x for x in a.args if "=" in x and not Path(x).exists()]
    images = [Path(x) for x in a.args if x not in overrides]
    if a.data:
        overrides.append(f"data.root={a.data}")
    cfg = load_config(a.config, overrides, schema_of)
    assert isinstance(cfg, TexturesConfig)
    if a.kind == "style":
        if len(images) < 2 or a.data:
            raise ConfigError(["synthesize style needs CONTENT STYLE [STYLE ...] images (no --data)"])
        if cfg.loss.masks and len(cfg.loss.masks) != len(images) - 1:
            raise ConfigError([f"'loss.masks' has {len(cfg.loss.masks)} masks for {len(images) - 1} style images"])
    elif bool(images) == bool(cfg.data.root):
        raise ConfigError(["synthesize texture needs source images or --data SHARDS (one of them)"])
    from vislab.families.textures import run  # torch and Lightning: only once the input is known to be good

    a.out.mkdir(parents=True, exist_ok=True)
    if a.kind == "style":
        run.style_job(cfg, images[0], images[1:], a.out)
    else:
        run.texture_job(cfg, images, a.out, rank=global_rank(), size=world_size())
    if global_rank() == 0:
        print(a.out, flush=True)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """`python -m vislab.families.textures.synthesize ...` (torchrun, srun): exit 2 on bad input."""
    try:
        return main(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
