"""One robustness run: images -> degradations -> attacks -> robustness.json, PNGs, summary (rank 0).

Under torchrun / srun (WORLD_SIZE > 1) a gloo/nccl process group is set up here; each rank evaluates its
own images and rank 0 writes everything. Rerunning with the same `--out` resumes: degradations and attacks
whose `progress/*.json` match the run's fingerprint are read back instead of recomputed.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vislab.core.dist import global_rank
from vislab.data.manifest import Manifest, atomic_write_text
from vislab.families.robustness import attacks as A
from vislab.families.robustness.classifier import Classifier
from vislab.families.robustness.dataset import Images, Targets, read_images
from vislab.families.robustness.evaluate import Progress, evaluate_all, gather, load_done, save_done
from vislab.families.robustness.humans import Aggregation


@dataclass(frozen=True)
class Settings:
    model: str
    data: str
    out: str
    plan: dict[str, tuple[str, ...]]
    norms: tuple[A.Norm, ...]
    max_images: int | None
    attack_images: int
    decision_images: int
    fmn_steps: int
    hsj_steps: int
    batch_size: int
    seed: int
    aggregation: Aggregation
    wandb: bool


def setup_distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun or srun (MASTER_ADDR / MASTER_PORT from the launcher or the batch
    script). gloo even on GPUs: only small Python objects (decisions, distances) are gathered."""
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", rank=global_rank(), world_size=world)
    return global_rank(), world


def device() -> torch.device:
    """This process's GPU (LOCAL_RANK, or SLURM_LOCALID under srun), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))))


def _progress_bar(total: int, rank: int) -> Any:
    from tqdm import tqdm  # slow-ish import, only once a run starts

    return tqdm(total=total, desc="conditions", unit="cond", disable=rank != 0, mininterval=2.0)


def _attack_norm(clf: Classifier, images: Images, targets: Targets, norm: A.Norm, s: Settings, out: Path,
                 fp: dict[str, Any]) -> dict[str, Any]:
    """FMN on images with global index < attack_images, HopSkipJump on those < decision_images."""
    result: dict[str, Any] = {}
    y_all = torch.tensor([targets.top1[int(y)] for y in images.labels], dtype=torch.long)
    for method, limit, steps in (("fmn", s.attack_images, s.fmn_steps), ("hsj", s.decision_images, s.hsj_steps)):
        path = out / "progress" / f"attack_{norm}_{method}.json"
        key = {**fp, "attack": f"{norm}-{method}", "limit": limit, "steps": steps}
        dists_all = load_done(path, key)
        if dists_all is None:
            mine = [i for i, g in enumerate(images.index) if g < limit]
            dev = clf.net.mean.device
            x = images.pixels[mine].to(dev).float() / 255
            dists = A.minimal_distances(clf.net, x, y_all[mine].to(dev), norm, method, steps) if mine else []  # type: ignore[arg-type]
            parts = gather(([images.index[i] for i in mine], dists))
            dists_all = [d for _, d in sorted((g, d) for idx, ds in parts for g, d in zip(idx, ds, strict=True))]
            if global_rank() == 0:
                save_done(path, key, _json_safe(dists_all))
        dists_all = [float(d) for d in dists_all]  # "inf" strings back to floats
        correct = [d > 0 for d in dists_all]  # 0 = misclassified before any perturbation
        summary = A.summarise_attack(dists_all, correct, norm)
        result["gradient" if method == "fmn" else "decision"] = {"method": {"fmn": "FMN", "hsj": "HopSkipJump"}[method],
                                                                 "steps": steps, **summary}
    grad = result["gradient"]["distances"]
    result["gradient_masking"] = A.masking_flag(grad, result["decision"]["distances"])
    return result


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else "-inf"
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def summary_table(results: dict[str, Any], attack_results: dict[str, Any]) -> str:
    lines = [f"{'degradation':<20}{'level':>10}{'n':>6}{'16-class':>10}{'humans':>9}{'top-1':>8}"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for name, res in results.items():
        for level, r in res["levels"].items():
            lines.append(f"{name:<20}{level:>10}{r['n_images']:>6}{r['n_images_16']:>5}{fmt(r['accuracy_16']):>10}"
                         f"{fmt(r['human_accuracy_16']):>9}{fmt(r['top1']):>8}")
    for norm, res in attack_results.items():
        for kind in ("gradient", "decision"):
            a = res[kind]
            rob = ", ".join(f"{eps}: {fmt(v)}" for eps, v in a["robust_accuracy"].items())
            median = "-" if a["median_distance"] is None else f"{a['median_distance']:.4g}"
            lines.append(f"attack {norm} {a['method']:<12} n={a['n_attacked']:<4} median={median}"
                         f"  success={fmt(a['success_rate'])}  robust acc: {rob}")
        lines.append(f"attack {norm} gradient masking: {res['gradient_masking']['reason']}")
    return "\n".join(lines)


def _log_wandb(s: Settings, out: Path, payload: dict[str, Any], pngs: list[Path]) -> None:
    import wandb  # slow import, only with --wandb

    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "vislab"), job_type="robustness", dir=str(out),
                     config={k: v for k, v in asdict(s).items() if k != "plan"} | {"plan": {k: list(v) for k, v in s.plan.items()}})
    flat = {f"robustness/{d}/{lv}/accuracy_16": r["accuracy_16"] for d, res in payload["degradations"].items()
            for lv, r in res["levels"].items() if r["accuracy_16"] is not None}
    flat |= {f"adversarial/{n}/{k}/median_distance": res[k]["median_distance"] for n, res in payload["attacks"].items()
             for k in ("gradient", "decision") if isinstance(res[k]["median_distance"], float)}
    run.log({**flat, **{p.stem: wandb.Image(str(p)) for p in pngs}})
    run.finish()


def run(s: Settings, clf: Classifier, manifest: Manifest, directory: Path, targets: Targets) -> dict[str, Any]:
    rank, world = setup_distributed()
    out = Path(s.out)
    t0 = time.time()
    images = read_images(directory, manifest, rank, world, s.max_images)
    clf.net.eval().to(device())
    torch.manual_seed(s.seed)
    fp = {"model": s.model, "data": str(directory), "seed": s.seed, "max_images": s.max_images,
          "aggregation": s.aggregation, "world_independent": True}
    bar = _progress_bar(sum(len(v) for v in s.plan.values()), rank)
    progress: Progress = bar.update
    results = evaluate_all(clf.net, images, s.plan, targets, out, fp, seed=s.seed, batch_size=s.batch_size,
                           how=s.aggregation, rank=rank, progress=progress)
    bar.close()
    attack_results: dict[str, Any] = {norm: _attack_norm(clf, images, targets, norm, s, out, fp) for norm in s.norms}
    n_total = sum(gather(len(images.keys)))
    payload = {"model": s.model, "data": str(directory), "n_images": n_total, "world_size": world,
               "settings": {k: v for k, v in asdict(s).items() if k != "plan"}, "plan": {k: list(v) for k, v in s.plan.items()},
               "degradations": results, "attacks": attack_results, "seconds": round(time.time() - t0, 1),
               "human_data": "bethgelab/model-vs-human raw-data (see families/robustness/data/human_accuracy.json)"}
    if rank == 0:
        from vislab.families.robustness.figures import (  # torch and Lightning: kept off the CLI's start-up path
            perturbation_histogram,
            psychometric_curves,
        )

        atomic_write_text(out / "robustness.json", json.dumps(_json_safe(payload), indent=1) + "\n")
        pngs = psychometric_curves(results, out, Path(s.model).name)
        hist = perturbation_histogram(attack_results, out)
        pngs += [hist] if hist else []
        print(summary_table(results, attack_results), flush=True)
        if s.wandb:
            _log_wandb(s, out, payload, pngs)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return payload
