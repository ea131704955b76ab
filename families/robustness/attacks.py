"""Minimal adversarial perturbations with Foolbox (Rauber, Brendel & Bethge 2017), in [0, 1] pixel space.

Per correctly classified image, the smallest perturbation that changes the model's top-1 decision:

    gradient attack   FMN, Fast Minimum-Norm (Pintor et al. 2021): minimises the norm directly, with a
                      built-in search over epsilon (L2: L2FMNAttack, Linf: LInfFMNAttack)
    decision attack   HopSkipJump (Chen et al. 2020): only the model's decisions, no gradients; run on a
                      subset, it is ~100x more expensive per image

Brendel & Bethge (2017): when the decision-based attack finds clearly smaller perturbations than the
gradient attack, the gradients are probably masked (saturated or shattered), and the gradient attack's
"robustness" is an artefact. `masking_flag` reports exactly that comparison on the images both attacked.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Literal

import torch

Norm = Literal["l2", "linf"]
NORMS: tuple[Norm, ...] = ("l2", "linf")
EPSILONS: dict[Norm, tuple[float, ...]] = {
    "l2": (0.1, 0.25, 0.5, 1.0, 2.0),
    "linf": (0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255),
}
"""Where robust accuracy is reported (distances in [0, 1] pixels; Linf 1/255 = one grey level)."""
MASKING_RATIO = 0.8
"""Flag gradient masking when the decision attack's median distance is below this fraction of FMN's."""


def _distance(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    flat = delta.flatten(1)  # (B, 3 * H * W)
    return flat.norm(p=2, dim=1) if norm == "l2" else flat.abs().amax(1)


def minimal_distances(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, norm: Norm,
                      method: Literal["fmn", "hsj"], steps: int, batch_size: int = 8) -> list[float]:
    """Smallest adversarial distance per image ((N, 3, H, W) in [0, 1], labels (N,)); inf = not found,
    0 = already misclassified."""
    import foolbox as fb  # slow import (eagerpy, GitPython), off the CLI's start-up path

    fmodel = fb.PyTorchModel(net.eval(), bounds=(0, 1))
    if method == "fmn":
        attack: Any = (fb.attacks.L2FMNAttack if norm == "l2" else fb.attacks.LInfFMNAttack)(steps=steps)
    else:
        attack = fb.attacks.HopSkipJumpAttack(steps=steps, initial_gradient_eval_steps=50,
                                              max_gradient_eval_steps=500, constraint=norm)
    out: list[float] = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size].contiguous(), y[start:start + batch_size]
        with torch.no_grad():
            wrong = net(xb).argmax(1) != yb
        _, clipped, success = attack(fmodel, xb, fb.criteria.Misclassification(yb), epsilons=None)
        d = _distance(clipped.detach() - xb, norm)
        d = torch.where(success.bool(), d, torch.full_like(d, math.inf))
        out += torch.where(wrong, torch.zeros_like(d), d).tolist()
    return out


def summarise_attack(distances: list[float], correct: list[bool], norm: Norm) -> dict[str, Any]:
    """Median minimal distance over correctly classified images, success rate, and robust accuracy
    (correct and not flipped within epsilon) over all attacked images at each epsilon."""
    n = len(correct)
    attacked = [d for d, c in zip(distances, correct, strict=True) if c]
    finite = [d for d in attacked if math.isfinite(d)]
    return {
        "n_images": n, "n_attacked": len(attacked),
        "clean_accuracy": len(attacked) / n if n else None,
        "success_rate": len(finite) / len(attacked) if attacked else None,
        "median_distance": statistics.median(attacked) if attacked else None,  # inf when most attacks fail
        "robust_accuracy": {f"{eps:.6g}": sum(d > eps for d in attacked) / n if n else None
                            for eps in EPSILONS[norm]},
        "distances": attacked,
    }


def masking_flag(gradient: list[float], decision: list[float]) -> dict[str, Any]:
    """Compare both attacks on the images both attacked (decision attack: a prefix of the same images)."""
    pairs = [(g, d) for g, d in zip(gradient, decision, strict=False) if d > 0 and math.isfinite(d)]
    if not pairs:
        return {"n": 0, "median_ratio": None, "flag": False,
                "reason": "the decision-based attack found no perturbation to compare"}
    ratios = [d / g if math.isfinite(g) and g > 0 else 0.0 for g, d in pairs]
    ratio = statistics.median(ratios)
    flag = ratio < MASKING_RATIO
    reason = (f"decision-based perturbations are {ratio:.2f}x the gradient attack's (median over {len(pairs)} "
              f"images): {'possible gradient masking' if flag else 'no sign of gradient masking'}")
    return {"n": len(pairs), "median_ratio": ratio, "flag": flag, "reason": reason}
