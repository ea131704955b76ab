"""V1 measures against values computed by hand, and the streaming correlation against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vislab.families.v1 import metrics as M

# one neuron, image A shown twice (1, 3), image B twice (4, 6)
RESPONSES = np.array([[1.0], [3.0], [4.0], [6.0]])
IMAGE_IDS = np.array([7, 7, 9, 9])


def test_noise_and_total_variance_by_hand() -> None:
    total, noise = M.variances(RESPONSES, IMAGE_IDS)
    assert noise[0] == pytest.approx(2.0)  # var([1, 3]) = var([4, 6]) = 2 (ddof=1)
    assert total[0] == pytest.approx(13 / 3)  # squared deviations from 3.5 sum to 13
    assert M.fev(RESPONSES, IMAGE_IDS)[0] == pytest.approx(1 - 2 / (13 / 3))


def test_feve_by_hand() -> None:
    # predicting 3 and 4: squared errors 4, 0, 0, 4 -> MSE 2 = noise variance -> all explainable variance explained
    assert M.feve(np.array([[3.0], [3.0], [4.0], [4.0]]), RESPONSES, IMAGE_IDS)[0] == pytest.approx(1.0)
    # a constant 3.5: MSE 13/4 -> 1 - (3.25 - 2) / (13/3 - 2)
    assert M.feve(np.full((4, 1), 3.5), RESPONSES, IMAGE_IDS)[0] == pytest.approx(1 - 1.25 / (13 / 3 - 2))


def test_oracle_by_hand() -> None:
    # leave-one-out means: 3, 1, 6, 4; r([1, 3, 4, 6], [3, 1, 6, 4]) = 1.25 / 3.25
    assert M.oracle_correlation(RESPONSES, IMAGE_IDS)[0] == pytest.approx(1.25 / 3.25)


def test_correlations_by_hand() -> None:
    pred = np.array([[3.0], [3.0], [4.0], [4.0]])
    # deviations (-.5, -.5, .5, .5) and (-2.5, -.5, .5, 2.5): cov 0.75, stds 0.5 and sqrt(13/4)
    assert M.correlation(pred, RESPONSES)[0] == pytest.approx(0.75 / (0.5 * np.sqrt(13 / 4)), rel=1e-6)
    assert M.correlation_to_average(pred, RESPONSES, IMAGE_IDS)[0] == pytest.approx(1.0, rel=1e-6)
    assert M.correlation(np.ones((4, 1)), RESPONSES)[0] == 0.0  # constant prediction: 0, not NaN


def test_summary_and_json() -> None:
    per = M.evaluate_neurons(np.array([[3.0], [3.0], [4.0], [4.0]]), RESPONSES, IMAGE_IDS)
    s = M.summarize(per)
    assert s["oracle"] == pytest.approx(1.25 / 3.25)
    assert s["fraction_of_oracle"] == pytest.approx(s["corr"] / s["oracle"])
    assert s["feve_num_neurons"] == 1
    assert M.json_list(np.array([0.5, np.nan])) == [0.5, None]
    with pytest.raises(ValueError, match="repeated images"):
        M.oracle_correlation(RESPONSES, np.arange(4))


def test_streaming_correlation_matches_numpy_and_merges() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    y[:, 0] = x[:, 0] * 2 + 1  # perfect
    x[:, 1] = 3.0  # constant prediction
    expected = M.correlation(x, y)
    a, b = M.CorrelationSums(6), M.CorrelationSums(6)
    a.update(torch.tensor(x[:20]), torch.tensor(y[:20]))
    b.update(torch.tensor(x[20:]), torch.tensor(y[20:]))
    a.merge_state(b)  # what the DDP reduction (sum) does
    got = a.compute().numpy()
    assert np.allclose(got, expected, atol=1e-6)
    assert got[0] == pytest.approx(1.0, abs=1e-6) and abs(got[1]) < 1e-6
