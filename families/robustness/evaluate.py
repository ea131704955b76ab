"""Degrade, classify, gather: one degradation at a time, resumable, each image on exactly one rank.

For every (degradation, level) each rank degrades its own images in batches (uint8 -> [0, 1] -> degrade ->
clip -> the model, whose normalisation is inside it) and records two decisions per image: the 16-class
decision (probabilities aggregated over each category's outputs) and the plain top-1. After a degradation
all ranks' records are gathered on rank 0, which writes `progress/<degradation>.json`; a restarted run
skips every degradation whose file exists with the same fingerprint (model, data, seed, subset, levels).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vislab.data.manifest import atomic_write_text
from vislab.families.robustness import conditions
from vislab.families.robustness.conditions import DEGRADATIONS
from vislab.families.robustness.dataset import Images, Targets
from vislab.families.robustness.degradations import image_seed
from vislab.families.robustness.humans import Aggregation, decide_16, human_accuracy

Progress = Callable[[int], None]


@dataclass
class Records:
    """One degradation's per-image decisions, (levels, images) each, gathered over ranks."""

    levels: list[str]
    keys: list[str]
    labels: list[int]
    pred16: list[list[int]]
    top1: list[list[int]]


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj` on every rank (a list of one without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.inference_mode()
def classify_degraded(net: torch.nn.Module, images: Images, degradation: str, level: str, targets: Targets,
                      seed: int, batch_size: int, how: Aggregation) -> tuple[list[int], list[int]]:
    """(16-class decisions, top-1 outputs) of this rank's images under one condition."""
    pred16: list[int] = []
    top1: list[int] = []
    device = next(net.buffers()).device  # the model's device (its normalisation buffers)
    for start in range(0, len(images.keys), batch_size):
        keys = images.keys[start:start + batch_size]
        x = images.pixels[start:start + batch_size].to(device).float() / 255  # (B, 3, 224, 224) in [0, 1]
        seeds = [image_seed(seed, k, degradation, level) for k in keys]
        x = conditions.apply(degradation, level, x, seeds).clamp(0, 1)
        logits = net(x)  # (B, num_classes)
        pred16 += decide_16(logits, targets.output_sets, how).tolist()
        top1 += logits.argmax(1).tolist()
    return pred16, top1


def run_degradation(net: torch.nn.Module, images: Images, degradation: str, levels: tuple[str, ...],
                    targets: Targets, seed: int, batch_size: int, how: Aggregation, progress: Progress) -> Records:
    pred16, top1 = [], []
    for level in levels:
        p, t = classify_degraded(net, images, degradation, level, targets, seed, batch_size, how)
        pred16.append(p)
        top1.append(t)
        progress(1)
    mine = Records(list(levels), images.keys, images.labels.tolist(), pred16, top1)
    parts = gather(mine)
    return Records(list(levels), [k for r in parts for k in r.keys], [y for r in parts for y in r.labels],
                   [[p for r in parts for p in r.pred16[j]] for j in range(len(levels))],
                   [[p for r in parts for p in r.top1[j]] for j in range(len(levels))])


def summarise(degradation: str, records: Records, targets: Targets) -> dict[str, Any]:
    """Per level: n images, top-1, 16-class accuracy (over images of the 16 categories), human accuracy."""
    d = DEGRADATIONS[degradation]
    cats = [targets.category[y] for y in records.labels]
    tops = [targets.top1[y] for y in records.labels]
    n16 = sum(c >= 0 for c in cats)
    levels = {}
    for j, level in enumerate(records.levels):
        correct16 = sum(p == c for p, c in zip(records.pred16[j], cats, strict=True) if c >= 0)
        correct1 = sum(p == t for p, t in zip(records.top1[j], tops, strict=True))
        levels[level] = {"n_images": len(cats), "n_images_16": n16,
                         "accuracy_16": correct16 / n16 if n16 else None,
                         "top1": correct1 / len(cats) if cats else None,
                         "human_accuracy_16": human_accuracy(d.human_experiment, d.human_condition(level))}
    return {"xlabel": d.xlabel, "human_experiment": d.human_experiment, "levels": levels}


def load_done(path: Path, fingerprint: dict[str, Any]) -> Any:
    """The result of a finished step of an earlier (preempted) run with the same fingerprint, else None."""
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except ValueError:
        return None
    return raw["result"] if raw.get("fingerprint") == fingerprint else None


def save_done(path: Path, fingerprint: dict[str, Any], result: Any) -> None:
    atomic_write_text(path, json.dumps({"fingerprint": fingerprint, "result": result}))


def evaluate_all(net: torch.nn.Module, images: Images, plan: dict[str, tuple[str, ...]], targets: Targets,
                 out: Path, fingerprint: dict[str, Any], *, seed: int, batch_size: int, how: Aggregation,
                 rank: int, progress: Progress) -> dict[str, Any]:
    """{degradation: summary} over the plan; finished degradations are read back, not recomputed."""
    results: dict[str, Any] = {}
    for name, levels in plan.items():
        path = out / "progress" / f"{name}.json"
        fp = {**fingerprint, "degradation": name, "levels": list(levels)}
        done = load_done(path, fp)  # every rank reads the same file: all skip or all compute
        if done is None:
            records = run_degradation(net, images, name, levels, targets, seed, batch_size, how, progress)
            if rank == 0:
                save_done(path, fp, records.__dict__)
        else:
            records = Records(**done)
            progress(len(levels))
        results[name] = summarise(name, records, targets)
    return results
