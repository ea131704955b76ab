"""The 16-class decision on known logits, and the human accuracies against the raw CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import needs_shared

from vislab.families.robustness import humans as H

HERE = Path(__file__).parent


def test_16_class_mean_vs_max_on_known_logits():
    cats = H.load_categories()
    sets = cats.output_sets(None, 1000)
    knife, dog = cats.names.index("knife"), cats.names.index("dog")
    logits = torch.full((1, 1000), -10.0)
    logits[0, 499] = 2.0                                  # the single knife class: one high probability
    logits[0, list(cats.imagenet_indices["dog"])] = 1.5   # 117 dog classes, each a bit lower
    probs = logits.double().softmax(1)
    agg = H.aggregate_16(probs, sets, "mean")
    assert agg[0, knife].item() == pytest.approx(probs[0, 499].item())
    assert agg[0, dog].item() == pytest.approx(probs[0, 152].item())  # all dog probabilities are equal
    assert H.decide_16(logits, sets, "mean").item() == knife           # mean: knife wins (e^2 > e^1.5)
    logits[0, 499] = 1.0
    assert H.decide_16(logits, sets, "mean").item() == dog
    assert H.decide_16(logits, sets, "max").item() == dog


def test_mapping_for_models_with_wnid_classes():
    cats = H.load_categories()
    sets = cats.output_sets(["n01440764", "n02102040", "n03417042"], 3)  # tench, springer spaniel, garbage truck
    assert sets[cats.names.index("dog")] == [1] and sets[cats.names.index("truck")] == [2]
    assert sum(map(len, sets)) == 2
    assert cats.category_of("n01440764") == -1


def test_accuracy_from_shipped_rows_by_hand():
    rows = H.read_rows([HERE / "contrast_rows.csv"])
    acc = H.accuracy_from_rows(rows)
    # seven rows copied from raw-data/contrast: c100 3 of 4 right; c05 0 of 3 ('na' = no response = wrong)
    assert acc["c100"]["n_trials"] == 4 and acc["c100"]["accuracy"] == 0.75
    assert acc["c100"]["per_subject"] == {"subject-01": 1.0, "subject-02": 0.5}
    assert acc["c05"]["n_trials"] == 3 and acc["c05"]["n_correct"] == 0


def test_shipped_json_quotes_the_issue_figures():
    exp = H.load_human_accuracy()["experiments"]
    for e, cond, value in (("uniform-noise", "0.35", 0.40), ("uniform-noise", "0.60", 0.15), ("contrast", "c05", 0.35),
                           ("low-pass", "10", 0.38), ("phase-scrambling", "120", 0.39)):
        assert exp[e][cond]["accuracy"] == pytest.approx(value, abs=0.005)


@pytest.mark.realdata
def test_shipped_json_equals_recomputation_from_raw_csvs(tmp_path):
    root = needs_shared("model-vs-human")
    shipped = json.loads(H.CATEGORIES_JSON.read_text())
    wnids = tmp_path / "categories.txt"
    wnids.write_text("\n".join(shipped["imagenet_wnids"]) + "\n")
    cats_path, acc_path = H.build(root / "raw-data", root / "human_categories.py", wnids, tmp_path)
    assert json.loads(acc_path.read_text())["experiments"] == H.load_human_accuracy()["experiments"]
    rebuilt = json.loads(cats_path.read_text())
    assert {k: rebuilt[k] for k in ("categories", "imagenet_indices", "wnids")} == \
           {k: shipped[k] for k in ("categories", "imagenet_indices", "wnids")}
