"""Which degradations exist, their published levels and ranges, and how a `--degradations` string is read.

    contrast                 all of the paper's levels
    contrast:10/5            two levels (any value inside the paper's range; humans only at the paper's)
    uniform-noise,low-pass   several degradations

A level is stored under a canonical label: the paper's own spelling where it has one (`0.35`, `inf`,
`greyscale`), so results, human data and plots line up.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vislab.families.robustness import degradations as D

Apply = Callable[[torch.Tensor, float, list[int]], torch.Tensor]
"""(images (B, 3, H, W) in [0, 1], numeric level, per-image seeds) -> degraded images."""


@dataclass(frozen=True)
class Degradation:
    name: str
    levels: tuple[str, ...]
    """The paper's levels, in the order of its plots (weakest first)."""
    apply: Apply
    xlabel: str
    human_experiment: str | None
    """Folder of model-vs-human/raw-data holding the observers' responses (None: no human data shipped)."""
    human_conditions: tuple[str, ...] | None = None
    """The raw data's `condition` spelling of each level, when it differs from the label."""
    categorical: tuple[str, ...] | None = None
    """Named levels (colour/greyscale): no numeric range."""
    value_range: tuple[float, float] = (0.0, 0.0)
    numeric_scale: float = 1.0
    """label value * scale = the function's argument (contrast is given in percent)."""
    random: bool = False

    def value(self, label: str) -> float:
        if self.categorical:
            return float(self.categorical.index(label))
        return float(label) * self.numeric_scale

    def human_condition(self, label: str) -> str | None:
        if label not in self.levels or self.human_experiment is None:
            return None
        return self.human_conditions[self.levels.index(label)] if self.human_conditions else label


def _named(fns: tuple[Callable[[torch.Tensor], torch.Tensor], ...]) -> Apply:
    return lambda x, v, seeds: fns[int(v)](x)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


DEGRADATIONS: dict[str, Degradation] = {d.name: d for d in (
    Degradation("colour", ("colour", "greyscale"), _named((_identity, D.greyscale)), "Colour", "colour",
                ("cr", "bw"), categorical=("colour", "greyscale")),
    Degradation("contrast", ("100", "50", "30", "15", "10", "5", "3", "1"),
                lambda x, v, s: D.contrast(x, v), "Contrast in percent", "contrast",
                ("c100", "c50", "c30", "c15", "c10", "c05", "c03", "c01"), value_range=(1, 100), numeric_scale=0.01),
    Degradation("uniform-noise", ("0", "0.03", "0.05", "0.1", "0.2", "0.35", "0.6", "0.9"),
                D.uniform_noise, "Uniform noise width", "uniform-noise",
                ("0.00", "0.03", "0.05", "0.10", "0.20", "0.35", "0.60", "0.90"), value_range=(0, 0.9), random=True),
    Degradation("low-pass", ("0", "1", "3", "5", "7", "10", "15", "40"),
                lambda x, v, s: D.low_pass(x, v), "Filter standard deviation (px)", "low-pass", value_range=(0, 40)),
    Degradation("high-pass", ("inf", "3", "1.5", "1", "0.7", "0.55", "0.45", "0.4"),
                lambda x, v, s: D.high_pass(x, v), "Filter standard deviation (px)", "high-pass",
                value_range=(0.4, math.inf)),
    Degradation("phase-scrambling", ("0", "30", "60", "90", "120", "150", "180"),
                D.phase_scrambling, "Phase noise width (degrees)", "phase-scrambling", value_range=(0, 180), random=True),
    Degradation("power-equalisation", ("original", "equalised"), _named((D.greyscale, D.power_equalisation)),
                "Power spectrum", "power-equalisation", ("0", "pow"), categorical=("original", "equalised")),
    Degradation("rotation", ("0", "90", "180", "270"), lambda x, v, s: D.rotation(x, int(v)),
                "Rotation angle (degrees)", "rotation", categorical=None, value_range=(0, 270)),
    Degradation("false-colour", ("true", "opponent"), _named((_identity, D.false_colour)), "Colour",
                "false-colour", ("true", "false"), categorical=("true", "opponent")),
    Degradation("salt-and-pepper", ("0", "0.1", "0.2", "0.35", "0.5", "0.65", "0.8", "0.95"),
                D.salt_and_pepper, "Salt-and-pepper probability", None, value_range=(0, 0.95), random=True),
)}
SUITES: dict[str, tuple[str, ...]] = {"geirhos": tuple(DEGRADATIONS)}
"""Eidolon distortions are absent: their toolbox (Koenderink et al. 2017) is not on PyPI."""


def canonical(d: Degradation, text: str) -> str:
    """The label of a level as typed (`.35` -> `0.35`, `10.0` -> `10`); ValueError with a reason if invalid."""
    if d.categorical:
        if text not in d.categorical:
            raise ValueError(f"unknown level '{text}' (valid: {', '.join(d.categorical)})")
        return text
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"level '{text}' is not a number") from None
    for label in d.levels:  # the paper's spelling when it is one of the paper's levels
        if float(label) == v:
            return label
    lo, hi = d.value_range
    if not lo <= v <= hi or math.isnan(v):
        raise ValueError(f"level {text} is outside the paper's range [{lo:g}, {hi:g}]")
    if d.name == "rotation":
        raise ValueError(f"level {text}: rotations are 0, 90, 180 or 270 degrees")
    return f"{v:g}"


def parse_degradations(spec: str) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """'contrast:10/5,rotation' -> ({'contrast': ('10', '5'), 'rotation': (all)}, problems)."""
    out: dict[str, tuple[str, ...]] = {}
    problems: list[str] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, levels = item.partition(":")
        if name not in DEGRADATIONS:
            close = difflib.get_close_matches(name, list(DEGRADATIONS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(DEGRADATIONS)})"
            problems.append(f"--degradations: unknown degradation '{name}'{hint}")
            continue
        d = DEGRADATIONS[name]
        labels: list[str] = []
        for text in (levels.split("/") if levels else d.levels):
            try:
                labels.append(canonical(d, text.strip()))
            except ValueError as e:
                problems.append(f"--degradations: {name}: {e}")
        out[name] = tuple(dict.fromkeys(labels))
    if not out and not problems:
        problems.append("--degradations: no degradation given")
    return out, problems


def apply(name: str, label: str, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    d = DEGRADATIONS[name]
    return d.apply(x, d.value(label), seeds)
