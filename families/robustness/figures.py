"""The paper's plot: 16-class accuracy against degradation level, the model beside the human observers;
and the distribution of minimal adversarial perturbations."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

MODEL_COLOUR = "#E2001A"   # model-vs-human's red for networks
HUMAN_COLOUR = "#A5228A"   # and purple for human observers


def _curve(ax: Axes, name: str, summary: dict[str, Any], model_label: str) -> None:
    levels = list(summary["levels"])
    xs = range(len(levels))
    get = lambda key: [summary["levels"][lv][key] for lv in levels]  # noqa: E731
    acc16, top1, human = get("accuracy_16"), get("top1"), get("human_accuracy_16")
    if any(a is not None for a in acc16):
        ax.plot(xs, [math.nan if a is None else a for a in acc16], "o-", color=MODEL_COLOUR, label=f"{model_label} (16-class)")
    if any(h is not None for h in human):
        ax.plot(xs, [math.nan if h is None else h for h in human], "^-", color=HUMAN_COLOUR, label="humans (16-class)")
    ax.plot(xs, [math.nan if t is None else t for t in top1], "s--", color="grey", lw=1, ms=3, label=f"{model_label} (top-1)")
    ax.axhline(1 / 16, color="black", lw=0.5, ls=":")  # chance in the 16-class task
    ax.set_xticks(list(xs), levels, rotation=45 if max(len(s) for s in levels) > 4 else 0)
    ax.set_ylim(0, 1.02)
    ax.set_title(name)
    ax.set_xlabel(summary["xlabel"])
    ax.set_ylabel("classification accuracy")


def psychometric_curves(results: dict[str, Any], out: Path, model_label: str) -> list[Path]:
    """One PNG per degradation (`curve_<name>.png`) and all of them in one grid (`curves.png`)."""
    paths = []
    for name, summary in results.items():
        fig, ax = plt.subplots(figsize=(4, 3.4), constrained_layout=True)
        _curve(ax, name, summary, model_label)
        ax.legend(fontsize=7)
        paths.append(out / f"curve_{name}.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    cols = min(4, len(results))
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.4 * rows), squeeze=False, constrained_layout=True)
    for ax, (name, summary) in zip(axes.flat, results.items(), strict=False):
        _curve(ax, name, summary, model_label)
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    paths.append(out / "curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def perturbation_histogram(attacks: dict[str, Any], out: Path) -> Path | None:
    """Histogram of minimal perturbation sizes per norm (gradient and decision attack overlaid)."""
    norms = [n for n in attacks if attacks[n].get("gradient")]
    if not norms:
        return None
    fig, axes = plt.subplots(1, len(norms), figsize=(4.5 * len(norms), 3.4), squeeze=False, constrained_layout=True)
    for ax, norm in zip(axes.flat, norms, strict=True):
        for key, colour in (("gradient", MODEL_COLOUR), ("decision", "#1f77b4")):
            res = attacks[norm].get(key)
            finite = [d for d in (res or {}).get("distances", []) if math.isfinite(d) and d > 0]
            if finite:
                bins = [min(finite) * (max(finite) / min(finite)) ** (i / 20) for i in range(21)] if max(finite) > min(finite) else 10
                ax.hist(finite, bins=bins, alpha=0.6, color=colour, label=f"{res['method']} (n={len(finite)})")
        ax.set_xscale("log")
        ax.set_xlabel(f"minimal {norm.upper()} perturbation ([0, 1] pixels)")
        ax.set_ylabel("images")
        ax.legend(fontsize=7)
    path = out / "perturbations.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
