"""The 16 coarse categories of Geirhos et al., the 16-class decision, and the human observers' accuracies.

Both tables ship as JSON in `data/`, made from the public raw files by this module's command:

    python -m vislab.families.robustness.humans \\
        --raw ../shared/data/model-vs-human/raw-data \\
        --categories ../shared/data/model-vs-human/human_categories.py \\
        --wnids modelvshuman/helper/categories.txt     # of bethgelab/model-vs-human, same commit
        [--out families/robustness/data]

`human_categories.py` is read as data (its literals, through `ast`), never executed. Human accuracy per
condition = trials whose response equals the true category / all trials, over all observers (a missing
response, `na`, counts as wrong, as in model-vs-human's analysis).
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import torch

from vislab.core.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent / "data"
CATEGORIES_JSON = DATA_DIR / "human_categories.json"
ACCURACY_JSON = DATA_DIR / "human_accuracy.json"
Aggregation = Literal["mean", "max"]


@dataclass(frozen=True)
class Categories:
    names: tuple[str, ...]
    """The 16 categories, sorted (the order of model-vs-human's decisions)."""
    imagenet_indices: dict[str, tuple[int, ...]]
    """ImageNet-1k output indices aggregated into each category (model-vs-human's `*_indices`)."""
    wnids: dict[str, frozenset[str]]
    """WordNet ids belonging to each category (labels of images; models with wnid-named classes)."""
    imagenet_wnids: tuple[str, ...]
    """The 1000 ILSVRC-2012 wnids in output order (sorted)."""

    def category_of(self, wnid: str) -> int:
        """Index of the category a wnid belongs to, -1 if none."""
        for i, name in enumerate(self.names):
            if wnid in self.wnids[name]:
                return i
        return -1

    def output_sets(self, class_wnids: Sequence[str] | None, num_classes: int) -> list[list[int]]:
        """Per category, the model outputs to aggregate: the reference indices for an ImageNet-1k head,
        else the outputs whose class wnid belongs to the category (may be empty)."""
        if num_classes == 1000 and (class_wnids is None or tuple(class_wnids) == self.imagenet_wnids):
            return [list(self.imagenet_indices[n]) for n in self.names]
        wnids = list(class_wnids or [])
        return [[j for j, w in enumerate(wnids) if w in self.wnids[n]] for n in self.names]


@cache
def load_categories() -> Categories:
    raw = json.loads(CATEGORIES_JSON.read_text())
    return Categories(tuple(raw["categories"]), {k: tuple(v) for k, v in raw["imagenet_indices"].items()},
                      {k: frozenset(v) for k, v in raw["wnids"].items()}, tuple(raw["imagenet_wnids"]))


@cache
def load_human_accuracy() -> dict[str, Any]:
    return json.loads(ACCURACY_JSON.read_text())


def human_accuracy(experiment: str | None, condition: str | None) -> float | None:
    if experiment is None or condition is None:
        return None
    entry = load_human_accuracy()["experiments"].get(experiment, {}).get(condition)
    return None if entry is None else float(entry["accuracy"])


def aggregate_16(probs: torch.Tensor, output_sets: list[list[int]], how: Aggregation = "mean") -> torch.Tensor:
    """(B, K) class probabilities -> (B, 16) category scores: the mean (model-vs-human's
    ImageNetProbabilitiesTo16ClassesMapping) or the max (2018 code: argmax over the mapped classes) of each
    category's outputs; a category without outputs scores -inf."""
    cols = []
    for idx in output_sets:
        if not idx:
            cols.append(torch.full((probs.shape[0],), -torch.inf, dtype=probs.dtype, device=probs.device))
            continue
        sub = probs[:, idx]  # (B, |idx|)
        cols.append(sub.mean(1) if how == "mean" else sub.amax(1))
    return torch.stack(cols, 1)


def decide_16(logits: torch.Tensor, output_sets: list[list[int]], how: Aggregation = "mean") -> torch.Tensor:
    """(B, K) logits -> (B,) index of the chosen category (softmax first, as the paper's probabilities)."""
    return aggregate_16(logits.double().softmax(1), output_sets, how).argmax(1)


# ------------------------------------------------------------------------------------ building the JSON
def accuracy_from_rows(rows: Iterable[dict[str, str]]) -> dict[str, dict[str, Any]]:
    """{condition: {accuracy, n_trials, n_correct, per_subject: {subject: accuracy}}} from raw-data rows."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_subject: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in rows:
        correct = int(r["object_response"] == r["category"])
        for c in (counts[r["condition"]], per_subject[r["condition"]][r["subj"]]):
            c[0] += correct
            c[1] += 1
    return {cond: {"accuracy": round(k / n, 6), "n_trials": n, "n_correct": k,
                   "per_subject": {s: round(a / b, 6) for s, (a, b) in sorted(per_subject[cond].items())}}
            for cond, (k, n) in sorted(counts.items())}


def read_rows(paths: Iterable[Path]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for p in sorted(paths):
        with open(p, newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def parse_categories_py(path: Path) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    """The wnid frozensets and `*_indices` lists of model-vs-human's HumanCategories, as literals."""
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "HumanCategories")
    wnids: dict[str, list[str]] = {}
    indices: dict[str, list[int]] = {}
    for node in cls.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if name.endswith("_indices"):
            indices[name[: -len("_indices")]] = list(ast.literal_eval(node.value))
        elif isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "frozenset":
            wnids[name] = sorted(ast.literal_eval(node.value.args[0]))
    return wnids, indices


def _git_commit(path: Path) -> str | None:
    commit_file = path / "COMMIT"
    if commit_file.is_file():
        return commit_file.read_text().strip()
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def build(raw: Path, categories_py: Path, wnids_txt: Path, out: Path) -> tuple[Path, Path]:
    command = "python -m vislab.families.robustness.humans " + " ".join(sys.argv[1:])
    source = {"repository": "bethgelab/model-vs-human", "commit": _git_commit(raw.parent), "license": "MIT"}
    wnids, indices = parse_categories_py(categories_py)
    names = sorted(indices)
    imagenet_wnids = [line.split()[0] for line in wnids_txt.read_text().splitlines() if line.strip()]
    if len(imagenet_wnids) != 1000 or imagenet_wnids != sorted(imagenet_wnids) or len(names) != 16:
        raise ConfigError([f"{wnids_txt}: expected 1000 sorted wnids and 16 categories"])
    cats = {"provenance": {**source, "files": [str(categories_py.name), "modelvshuman/helper/categories.txt"],
                           "command": command},
            "categories": names, "imagenet_indices": {n: indices[n] for n in names},
            "wnids": {n: wnids[n] for n in names}, "imagenet_wnids": imagenet_wnids}
    experiments = {exp.name: accuracy_from_rows(read_rows(exp.glob("*.csv")))
                   for exp in sorted(raw.iterdir()) if exp.is_dir()}
    acc = {"provenance": {**source, "files": "raw-data/<experiment>/*.csv", "command": command,
                          "definition": "correct trials / all trials over all observers per condition; "
                                        "'na' (no response) counts as wrong"},
           "experiments": experiments}
    out.mkdir(parents=True, exist_ok=True)
    (out / CATEGORIES_JSON.name).write_text(json.dumps(cats, indent=1) + "\n")
    (out / ACCURACY_JSON.name).write_text(json.dumps(acc, indent=1) + "\n")
    return out / CATEGORIES_JSON.name, out / ACCURACY_JSON.name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vislab.families.robustness.humans", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", type=Path, required=True, help="model-vs-human raw-data/ folder")
    p.add_argument("--categories", type=Path, required=True, help="model-vs-human human_categories.py")
    p.add_argument("--wnids", type=Path, required=True, help="model-vs-human helper/categories.txt")
    p.add_argument("--out", type=Path, default=DATA_DIR)
    a = p.parse_args(argv)
    for path in (a.raw, a.categories, a.wnids):
        if not path.exists():
            raise ConfigError([f"not found: {path}"])
    for path in build(a.raw, a.categories, a.wnids, a.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
