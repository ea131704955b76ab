"""The work behind `vislab synthesize` (torch, Lightning): targets, optimisation per scale, outputs, tracking.

Boundary (synthesize.py: config, images) -> assembly (feature net, objective, PixelSynthesis) -> Lightning's
loop (one single-device Trainer per batch and scale; the batch's images are independent).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from vislab.core.config import to_dict, to_yaml
from vislab.core.errors import ConfigError
from vislab.families.textures.features import FeatureNet, build_features
from vislab.families.textures.figures import contact_sheet, loss_curve, side_by_side, to_pil
from vislab.families.textures.losses import (
    Objective,
    gram,
    match_color_histogram,
    match_luminance,
    rgb_to_yiq,
    yiq_to_rgb,
)
from vislab.families.textures.metrics import GramEvaluator, centre_square
from vislab.families.textures.module import PixelSynthesis, seeded_noise, spectrum_noise
from vislab.families.textures.schema import TexturesConfig
from vislab.families.textures.synthesize import Source, open_image, seed_of, shard_sources, to_tensor

Curve = list[tuple[int, list[float]]]


def optimise(cfg: TexturesConfig, features: FeatureNet, objective: Objective, init: torch.Tensor) -> tuple[torch.Tensor, Curve]:
    """Optimise a batch of images (B, C, H, W) for `synth.steps` iterations; (result in [0, 1], loss curve)."""
    s = cfg.synth
    module = PixelSynthesis(features, objective, init, optimizer=s.optimizer, lr=s.lr, history_size=s.history_size,
                            line_search=s.line_search, log_every=s.log_every)
    trainer = pl.Trainer(accelerator="cpu" if not torch.cuda.is_available() else "auto", devices=1, max_steps=s.steps,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, deterministic=cfg.trainer.deterministic)
    # the "data" is only a step counter: every step optimises the same images
    trainer.fit(module, train_dataloaders=DataLoader(range(s.steps), batch_size=None))  # type: ignore[arg-type]
    return module.result().cpu(), module.curve


def layer_distances(features: FeatureNet, objective: Objective, images: torch.Tensor) -> dict[str, list[float]]:
    with torch.no_grad():
        x = images if images.shape[1] == 3 else images.expand(-1, 3, -1, -1)
        return {k: v.tolist() for k, v in objective.layer_distances(features(x)).items()}


# --------------------------------------------------------------------------------------------- texture
def texture_job(cfg: TexturesConfig, paths: list[Path], out: Path, rank: int = 0, size: int = 1) -> None:
    if paths:
        pils = [open_image(p, cfg.data.min_side, "source image") for p in paths]  # every image checked first
        sources = [Source(p.stem, to_tensor(im, cfg.source_side())) for p, im in zip(paths, pils, strict=True)]
    else:
        sources = shard_sources(cfg, rank, size)
    features = build_features(cfg.model)  # unknown layers / missing weights: ConfigError, before optimising
    evaluator = GramEvaluator(cfg.eval) if cfg.eval.network else None
    jobs = [(src, k) for src in sources for k in range(cfg.data.samples_per_source)]
    records = []
    for i in range(0, len(jobs), cfg.data.batch_size):
        batch = jobs[i:i + cfg.data.batch_size]
        t0 = time.time()
        images: torch.Tensor | None = None
        start: torch.Tensor | None = None
        curve: Curve = []
        for side in cfg.scale_sides():
            objective = texture_objective(cfg, features, [src.image for src, _ in batch], side)
            if images is None:
                images = start = torch.cat([_init(cfg, src.image, side, seed_of(cfg, src.name, k)) for src, k in batch])
            else:  # coarse-to-fine: the previous scale, upsampled, is the next start
                images = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
            offset = curve[-1][0] if curve else 0
            images, part = optimise(cfg, features, objective, images)
            curve += [(offset + step, losses) for step, losses in part]
        assert images is not None and start is not None
        dist = layer_distances(features, objective, images)
        seconds = (time.time() - t0) / len(batch)
        if start.shape[-2:] != images.shape[-2:]:  # coarse-to-fine: the start at the result's size
            start = F.interpolate(start, size=images.shape[-2:], mode="bilinear", align_corners=False)
        for j, (src, k) in enumerate(batch):
            name = src.name if cfg.data.samples_per_source == 1 else f"{src.name}_{k}"
            others = [s.image for s in sources if s is not src][:4]
            metrics = evaluator.evaluate(images[j:j + 1], src.image, start[j:j + 1], others) if evaluator else {}
            records.append(write_outputs(out, name, centre_square(src.image, images.shape[-1]), images[j:j + 1],
                                         [(step, losses[j]) for step, losses in curve],
                                         {k2: v[j] for k2, v in dist.items()}, metrics, seconds))
    finish(cfg, out, records, rank, size, kind="texture")


def texture_objective(cfg: TexturesConfig, features: FeatureNet, sources: list[torch.Tensor], side: int) -> Objective:
    """Gram targets of each source's centre square at the synthesised side (source and result the same size,
    as Ustyuzhaninov et al. do: with 'same' zero padding the border's share of the positions, and so the
    Gram matrix, depends on the image size, and a 55 px filter reaches 27 px in from every edge)."""
    with torch.no_grad():
        grams = [{k: gram(v) for k, v in features(centre_square(s, side)).items()} for s in sources]
    targets = {layer: torch.cat([g[layer] for g in grams]) for layer in cfg.model.layers}  # (B, C, C)
    return Objective(cfg.model.layers, cfg.model.layer_weights, [targets], [None], style_weight=cfg.loss.style_weight,
                     tv_weight=cfg.loss.tv_weight, range_weight=cfg.loss.range_weight)


def _init(cfg: TexturesConfig, source: torch.Tensor, side: int, seed: int) -> torch.Tensor:
    if cfg.synth.init == "spectrum":  # clamped: the start must be a valid image (random phases overshoot [0, 1])
        return spectrum_noise(centre_square(source, side), seed).clamp(0, 1)
    if cfg.synth.init == "content":
        raise ConfigError(["'synth.init'=content is for style transfer; textures start from 'spectrum' or 'noise'"])
    return seeded_noise(1, 3, side, side, seed)


# ----------------------------------------------------------------------------------------------- style
def style_job(cfg: TexturesConfig, content_path: Path, style_paths: list[Path], out: Path) -> None:
    content_pil = open_image(content_path, cfg.data.min_side, "content image")
    style_pils = [open_image(p, cfg.data.min_side, "style image") for p in style_paths]
    masks = []
    for m in cfg.loss.masks:
        mask = open_mask(Path(m))
        if mask.size != content_pil.size:
            raise ConfigError([f"'loss.masks': {m} is {mask.width}x{mask.height} px, the content image "
                               f"{content_path} is {content_pil.width}x{content_pil.height}"])
        masks.append(mask)
    if cfg.model.content_layer is None:
        raise ConfigError(["'model.content_layer' is not set (style transfer matches the content there)"])
    features = build_features(cfg.model, extra_layers=[cfg.model.content_layer])
    content = to_tensor(content_pil, cfg.data.image_size)  # (1, 3, H, W)
    styles = [to_tensor(s, cfg.source_side()) for s in style_pils]
    luminance = cfg.loss.color == "luminance"
    if cfg.loss.color == "histogram":
        styles = [match_color_histogram(s, content) for s in styles]
    if luminance:  # Gatys et al. 2016: style of the luminance only, the content's chroma kept
        content_y = rgb_to_yiq(content)[:, :1]
        styles = [match_luminance(rgb_to_yiq(s)[:, :1], content_y).expand(-1, 3, -1, -1) for s in styles]
    with torch.no_grad():
        targets = [{k: gram(v) for k, v in features(s).items() if k in cfg.model.layers} for s in styles]

    images: torch.Tensor | None = None
    curve: Curve = []
    for side in cfg.scale_sides():
        c = to_tensor(content_pil, side)
        c_in = rgb_to_yiq(c)[:, :1] if luminance else c  # what is optimised: (1, 1 or 3, H, W)
        region_masks: list[torch.Tensor | None] = [None] * len(styles)
        if masks:
            region_masks = [to_tensor(m.convert("RGB"), side)[:, :1] for m in masks]
        with torch.no_grad():
            content_target = features(c_in.expand(-1, 3, -1, -1))[cfg.model.content_layer]
        objective = Objective(cfg.model.layers, cfg.model.layer_weights, targets, region_masks,
                              style_weight=cfg.loss.style_weight, content_layer=cfg.model.content_layer,
                              content_target=content_target, content_weight=cfg.loss.content_weight,
                              tv_weight=cfg.loss.tv_weight, range_weight=cfg.loss.range_weight)
        if images is None:
            height, width = c_in.shape[-2:]
            images = c_in.clone() if cfg.synth.init == "content" else seeded_noise(1, c_in.shape[1], height, width, cfg.seed)
        else:
            images = F.interpolate(images, size=c_in.shape[-2:], mode="bilinear", align_corners=False)
        offset = curve[-1][0] if curve else 0
        images, part = optimise(cfg, features, objective, images)
        curve += [(offset + step, losses) for step, losses in part]
    assert images is not None
    dist = layer_distances(features, objective, images)
    result = yiq_to_rgb(torch.cat([images, rgb_to_yiq(content)[:, 1:]], 1)).clamp(0, 1) if luminance else images
    record = write_outputs(out, content_path.stem, content, result, [(s, v[0]) for s, v in curve],
                           {k: v[0] for k, v in dist.items()}, {}, 0.0, extra=[*styles])
    finish(cfg, out, [record], 0, 1, kind="style")


def open_mask(path: Path) -> Any:

    try:
        with Image.open(path) as im:
            return im.convert("L")
    except OSError as e:
        raise ConfigError([f"'loss.masks': {path}: unreadable ({e})"]) from e


# --------------------------------------------------------------------------------------------- outputs
def write_outputs(out: Path, name: str, source: torch.Tensor, result: torch.Tensor, curve: list[tuple[int, float]],
                  distances: dict[str, float], metrics: dict[str, Any], seconds: float,
                  extra: list[torch.Tensor] | None = None) -> dict[str, Any]:
    to_pil(result).save(out / f"{name}.png")
    side_by_side([source, result, *(extra or [])]).save(out / f"{name}_pair.png")
    loss_curve(curve, out / f"{name}_loss.png", name)
    record = {"name": name, "png": f"{name}.png", "pair": f"{name}_pair.png", "loss_png": f"{name}_loss.png",
              "final_loss": curve[-1][1] if curve else None, "loss_curve": curve, "gram_distance": distances,
              "metrics": metrics, "seconds": seconds, "rank": int(os.environ.get("RANK", 0))}
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))
    return record


def finish(cfg: TexturesConfig, out: Path, records: list[dict[str, Any]], rank: int, size: int, kind: str) -> None:
    """Each rank writes its records; rank 0 waits for all, then contact sheet, summary and wandb."""
    rec_dir = out / "records"
    rec_dir.mkdir(exist_ok=True)
    tmp = rec_dir / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps(records))
    tmp.replace(rec_dir / f"rank{rank}.json")
    if rank != 0:
        return
    deadline = time.time() + cfg.synth.gather_timeout_s
    while missing := [r for r in range(size) if not (rec_dir / f"rank{r}.json").is_file()]:
        if time.time() > deadline:
            raise RuntimeError(f"ranks {missing} wrote no records to {rec_dir} within {cfg.synth.gather_timeout_s} s")
        time.sleep(0.5)
    everything = [r for k in range(size) for r in json.loads((rec_dir / f"rank{k}.json").read_text())]
    (out / "config.yaml").write_text(to_yaml(cfg))
    summary = {"kind": kind, "num_results": len(everything), "world_size": size,
               "names": sorted(r["name"] for r in everything), "results": everything}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if len(everything) > 1:
        contact_sheet([[out / r["pair"]] for r in sorted(everything, key=lambda r: r["name"])]).save(out / "contact_sheet.png")
    log_wandb(cfg, out, everything)


def wandb_mode(cfg: TexturesConfig) -> Literal["online", "offline", "disabled"]:
    """Offline unless online is asked for explicitly with a key (a family may not import train.tracking)."""
    if not cfg.logger.wandb:
        return "disabled"
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("offline", "disabled", "online"):
        return env  # type: ignore[return-value]
    if cfg.logger.mode == "online" and os.environ.get("WANDB_API_KEY"):
        return "online"
    return "disabled" if cfg.logger.mode == "disabled" else "offline"


def log_wandb(cfg: TexturesConfig, out: Path, records: list[dict[str, Any]]) -> None:
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return
    import wandb  # slow import, only when tracking is on

    run = wandb.init(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group,
                     tags=list(cfg.logger.tags), name=f"{cfg.experiment}-{out.name}", mode=mode,
                     dir=os.environ.get("WANDB_DIR", str(out)), config=to_dict(cfg))
    for r in records:
        for step, loss in r["loss_curve"]:
            run.log({f"{r['name']}/loss": loss, "iteration": step})
        summary = {f"{r['name']}/gram_distance/{k}": v for k, v in r["gram_distance"].items()}
        summary.update({f"{r['name']}/eval/{k}": v["mean"] for k, v in r["metrics"].items()})
        run.log({**summary, f"{r['name']}/image": wandb.Image(str(out / r["pair"]))})
    if (out / "contact_sheet.png").is_file():
        run.log({"contact_sheet": wandb.Image(str(out / "contact_sheet.png"))})
    run.finish()
