"""Each degradation against a hand-computed case or a numpy port of the paper's code (tests/robustness/reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
import robustness_reference as ref
import torch

from vislab.families.robustness import conditions as C
from vislab.families.robustness import degradations as D


def _image(h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) float64 image of 8-bit values in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, h, w), generator=g).double() / 255


def _np(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).numpy()


def test_contrast_10_percent_by_hand():
    x = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    x[0, :, 0, 0] = 1.0                    # white pixel: grey 1
    x[0, 1, 1, 1] = 1.0                    # pure green: grey 0.7154
    out = C.apply("contrast", "10", x, [0])
    assert torch.allclose(out[0, :, 0, 0], torch.full((3,), 0.45 + 0.1, dtype=torch.float64))
    assert torch.allclose(out[0, :, 1, 1], torch.full((3,), 0.45 + 0.07154, dtype=torch.float64))
    assert torch.allclose(out[0, :, 0, 1], torch.full((3,), 0.45, dtype=torch.float64))   # black -> (1 - c) / 2


def test_uniform_noise_statistics_and_seeds():
    x = torch.full((2, 3, 64, 64), 0.5, dtype=torch.float64)        # grey 0.5 stays 0.5 at 30 % contrast
    out = D.uniform_noise(x, 0.2, [1, 2])
    noise = out[:, 0] - 0.5
    assert noise.abs().max() <= 0.2 and torch.equal(out[:, 0], out[:, 2])
    assert abs(noise.mean().item()) < 0.01
    assert abs(noise.std().item() - 0.4 / 12 ** 0.5) < 0.005        # U(-w, w): std = 2w / sqrt(12)
    assert torch.equal(D.uniform_noise(x[1:], 0.2, [2]), out[1:])    # per-image seeds: batch split invariant
    assert not torch.equal(out[0], out[1])


def test_salt_and_pepper_extremes():
    x = _image()
    base = (0.7 / 2 + 0.3 * D.grey(x)).expand(-1, 3, -1, -1)
    assert torch.allclose(D.salt_and_pepper(x, 0.0, [3]), base)
    full = D.salt_and_pepper(torch.full((1, 3, 64, 64), 0.5), 1.0, [3])
    assert set(full.unique().tolist()) == {0.0, 1.0} and 0.4 < full.mean().item() < 0.6


def test_rotation_matches_paper_numpy():
    x = _image(4, 6)
    g = ref.rgb2gray(_np(x))
    for deg, expected in ((90, np.transpose(g, (1, 0))[::-1, :]), (180, g[::-1, ::-1]),
                          (270, np.transpose(g[::-1, :], (1, 0)))):
        out = C.apply("rotation", str(deg), x, [0])
        np.testing.assert_allclose(_np(out)[..., 0], expected, atol=1e-12)


@pytest.mark.parametrize("std", [1.0, 3.0, 10.0])
def test_low_pass_equals_scipy(std):
    x = _image()
    np.testing.assert_allclose(_np(D.low_pass(x, std))[..., 0], ref.low_pass_filter(_np(x), std), atol=1e-10)


@pytest.mark.parametrize("std", [0.4, 1.5, 3.0])
def test_high_pass_equals_scipy(std):
    x = _image()
    np.testing.assert_allclose(_np(D.high_pass(x, std))[..., 0], ref.high_pass_filter(_np(x), std), atol=1e-10)


def test_high_pass_inf_is_mean_shift():
    x = _image()
    g = ref.rgb2gray(_np(x))
    np.testing.assert_allclose(_np(D.high_pass(x, float("inf")))[..., 0], np.clip(g - g.mean() + 0.4423, 0, 1), atol=1e-12)


def test_phase_scrambling_equals_paper_code():
    x = _image(16, 16)
    half = 15 * 15 // 2
    shifts = ((D._uniform([7], (half,), torch.float64)[0] - 0.5) * (2 * 90 / 180 * np.pi)).numpy()
    out = D.phase_scrambling(x, 90, [7])
    np.testing.assert_allclose(_np(out)[..., 0], ref.scramble_phases(_np(x), shifts), atol=1e-10)
    np.testing.assert_allclose(_np(D.phase_scrambling(x, 0, [7]))[..., 0], ref.rgb2gray(_np(x)), atol=1e-10)


def test_power_equalisation_equals_paper_code():
    x = _image(224, 224)
    spectrum = D.mean_power_spectrum().numpy()
    np.testing.assert_allclose(_np(D.power_equalisation(x))[..., 0], ref.equalise_power_spectrum(_np(x), spectrum),
                               atol=1e-9)


def test_false_colour_equals_paper_code():
    x = _image(8, 8)
    gamma = D.gamma_table().numpy()
    np.testing.assert_allclose(_np(D.false_colour(x)), ref.false_colour(_np(x), gamma), atol=1e-12)


def test_levels_parse_and_reject():
    plan, problems = C.parse_degradations("contrast:10/2.0,uniform-noise:.35,high-pass:inf,rotation")
    assert plan == {"contrast": ("10", "2"), "uniform-noise": ("0.35",), "high-pass": ("inf",),
                    "rotation": ("0", "90", "180", "270")} and not problems
    _, problems = C.parse_degradations("contrast:200,uniform-nois,rotation:45,colour:sepia")
    assert len(problems) == 4
    assert "outside the paper's range [1, 100]" in problems[0] and "did you mean 'uniform-noise'" in problems[1]
