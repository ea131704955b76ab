"""Saliency metrics against hand-computed values, the centre bias, the blur, the density, and the importers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_shared
from transfer_data import single_thread, write_fixation_csv  # noqa: F401  (fixture)

from vislab.families.saliency import metrics as sm

# a 2x2 density and 4 fixations: two in the top-left cell, one bottom-left, one bottom-right
P = torch.tensor([[[0.4, 0.1], [0.3, 0.2]]])
COUNTS = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]])

pytestmark = pytest.mark.usefixtures("single_thread")


def test_information_gain_and_log_likelihood_by_hand() -> None:
    uniform = torch.full((2, 2), math.log(0.25))
    # IG over uniform = (2 log2(.4/.25) + log2(.3/.25) + log2(.2/.25)) / 4
    by_hand = (2 * math.log2(1.6) + math.log2(1.2) + math.log2(0.8)) / 4
    assert sm.information_gain(P.log(), uniform, COUNTS).item() == pytest.approx(by_hand, abs=1e-6)
    assert by_hand == pytest.approx(0.3243, abs=1e-4)
    # log-likelihood relative to uniform = the same number here; the NLL loss is in nats
    assert sm.log_likelihood(P.log(), COUNTS).item() == pytest.approx(by_hand, abs=1e-6)
    nll = -(2 * math.log(0.4) + math.log(0.3) + math.log(0.2)) / 4
    assert sm.nll_loss(P.log(), COUNTS).item() == pytest.approx(nll, abs=1e-6)
    # against itself the gain is zero; a model worse than the baseline has a negative gain
    assert sm.information_gain(P.log(), P.log(), COUNTS).item() == pytest.approx(0.0, abs=1e-7)
    assert sm.information_gain(uniform.expand(1, 2, 2), P.log(), COUNTS).item() == pytest.approx(-by_hand, abs=1e-6)


def test_auc_and_nss_by_hand() -> None:
    # AUC: per fixation, fraction of cells with lower saliency + half the ties (itself):
    # 0.4 -> (3 + .5)/4, 0.3 -> (2 + .5)/4, 0.2 -> (1 + .5)/4; mean over 4 fixations = (2*.875 + .625 + .375)/4
    assert sm.auc(P, COUNTS).item() == pytest.approx(0.6875, abs=1e-6)
    assert sm.auc(P.log(), COUNTS).item() == pytest.approx(0.6875, abs=1e-6)  # rank-based: monotone invariant
    assert sm.auc(torch.ones(1, 2, 2), COUNTS).item() == pytest.approx(0.5)  # a flat map is chance
    # NSS: mean .25, population std sqrt(.0125); z(.4) = 1.3416, z(.3) = .4472, z(.2) = -.4472
    z = lambda v: (v - 0.25) / math.sqrt(0.0125)  # noqa: E731
    by_hand = (2 * z(0.4) + z(0.3) + z(0.2)) / 4
    assert by_hand == pytest.approx(0.6708, abs=1e-4)
    assert sm.nss(P, COUNTS).item() == pytest.approx(by_hand, abs=1e-5)


def test_metrics_are_per_image_and_ignore_images_without_fixations() -> None:
    two = torch.cat([P, P.flip(-1)])
    counts = torch.cat([COUNTS, torch.zeros(1, 2, 2)])
    auc = sm.auc(two, counts)
    assert auc.shape == (2,) and auc[0].item() == pytest.approx(0.6875) and auc[1].item() == 0.0


def test_centre_bias_is_a_normalised_density_peaking_where_the_fixations_are() -> None:
    from vislab.families.saliency.data import center_bias

    rng = np.random.default_rng(0)
    fixations = [np.clip(rng.normal([0.5, 0.45], 0.08, (40, 2)), 0, 0.999).astype(np.float32) for _ in range(30)]
    log_cb, info = center_bias(fixations, (24, 32), [0.02, 0.05, 0.1, 0.3])
    density = np.exp(log_cb)
    assert density.sum() == pytest.approx(1.0, abs=1e-5) and density.shape == (24, 32)
    row, col = np.unravel_index(density.argmax(), density.shape)
    assert abs(row - 0.45 * 24) <= 2 and abs(col - 0.5 * 32) <= 2
    assert info["num_fixations"] == 1200 and info["bandwidth"] <= 0.05
    # fewer fixations: held-out likelihood asks for a wider kernel (the bandwidth adapts to the data given)
    _, few = center_bias([f[:2] for f in fixations[:6]], (24, 32), [0.02, 0.05, 0.1, 0.3])
    assert few["bandwidth"] > info["bandwidth"]


def test_blur_keeps_mass_and_the_model_outputs_a_log_density() -> None:
    from vislab.families.saliency.module import GaussianBlur, SaliencyModel

    blur = GaussianBlur(0.05, 0.2, width=40)  # sigma = 2 cells
    x = torch.zeros(1, 1, 31, 40)
    x[0, 0, 15, 20] = 1.0
    y = blur(x)
    assert y.sum().item() == pytest.approx(1.0, abs=1e-5) and y[0, 0, 15, 20] == y.max()
    assert torch.allclose(y[0, 0, 15, 18], y[0, 0, 15, 22]) and torch.allclose(y[0, 0, 13, 20], y[0, 0, 17, 20])
    assert (y[0, 0, 15, 22] / y[0, 0, 15, 20]).item() == pytest.approx(math.exp(-0.5), rel=1e-4)  # 1 sigma away
    model = SaliencyModel("resnet18", ["layer2", "layer3"], [4, 2], image_size=[64, 64], density_size=[16, 20])
    log_p = model(torch.randn(2, 3, 64, 64))
    assert log_p.shape == (2, 16, 20) and torch.allclose(log_p.flatten(1).logsumexp(1), torch.zeros(2), atol=1e-5)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"norms", "readout", "blur", "center_bias_weight"}  # the backbone stays frozen


def test_csv_importer_normalises_pixel_coordinates_and_splits_whole_images(tmp_path: Path) -> None:
    from vislab.data.manifest import Manifest
    from vislab.families.saliency.importers.fixations import run_csv

    csv_path = write_fixation_csv(tmp_path / "raw", n_images=10)
    manifests = run_csv(csv_path, tmp_path / "shards", shard_size_mb=1, workers=1, val_fraction=0.2,
                        test_fraction=0.2, log=lambda s: None)
    assert {s: m.num_samples for s, m in manifests.items()} == {"train": 6, "val": 2, "test": 2}
    assert Manifest.load(tmp_path / "shards" / "train").meta["family"] == "fixations"
    from vislab.families.saliency.data import read_fixations

    fix = read_fixations(tmp_path / "shards" / "train")
    assert len(fix) == 6 and all(f.shape == (24, 2) and (f >= 0).all() and (f < 1).all() for f in fix)
    with pytest.raises(ValueError, match="--coords 'feet'"):
        run_csv(csv_path, tmp_path / "bad", coords="feet")


def test_osie_reader_on_the_real_file() -> None:
    src = needs_shared("osie")
    from vislab.families.saliency.importers.fixations import read_osie

    records = read_osie(src)
    assert len(records) == 700 and next(iter(records)) == "stimuli/1001.jpg"
    fix = np.concatenate([f for f, _ in records.values()])
    assert len(fix) == 98321 and fix.min() >= 0 and fix.max() < 1
    # MATLAB 1-based pixels 1.2 .. 799.2 on 800 px: (x - 0.5) / 800
    assert fix[:, 0].min() == pytest.approx(0.7 / 800, abs=1e-4) and fix[:, 0].max() == pytest.approx(798.7 / 800, abs=1e-4)
    subjects = np.concatenate([s for _, s in records.values()])
    assert subjects.max() == 14  # 15 observers
