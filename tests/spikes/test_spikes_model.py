"""Spike-inference networks (CNN, STM), the inference pipeline on whole traces, and the ground-truth scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vislab.families.spikes.inference import infer, min_frames
from vislab.families.spikes.metrics import recording_stats, report
from vislab.families.spikes.networks import SpikeCNN, net_input, receptive_field, windows_of
from vislab.families.spikes.stm import STM

NETWORKS = {
    "cnn": lambda: SpikeCNN(filters=[4, 5, 6], dense=3, ensemble_size=3),
    "cnn-poisson": lambda: SpikeCNN(filters=[4, 5, 6], dense=3, ensemble_size=2, conditioned=False, output="softplus"),
    "stm": lambda: STM(window=64, components=2, features=3, ensemble_size=2),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_forward_backward_shapes_and_finite(name: str) -> None:
    torch.manual_seed(0)
    net = NETWORKS[name]()
    x = torch.randn(2, net.in_channels, 100, requires_grad=True)
    out = net.forward_trace(x)
    assert out.shape == (2, net.ensemble_size, 100 - net.receptive_field + 1)
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    if name != "cnn":  # Poisson models predict non-negative rates
        assert (out >= 0).all()


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_fully_convolutional_equals_window_model(name: str) -> None:
    """The a-trous trace mode computes exactly what the window model computes on every window."""
    torch.manual_seed(1)
    net = NETWORKS[name]()
    x = torch.randn(3, net.in_channels, 200)
    trace = net.forward_trace(x)  # (3, E, 137)
    windows = net.forward_windows(windows_of(x, net.receptive_field)).view(3, -1, net.ensemble_size).transpose(1, 2)
    assert torch.allclose(trace, windows, atol=1e-5)


def test_cascade_geometry() -> None:
    assert receptive_field([31, 19, 5]) == 64
    net = SpikeCNN()  # CASCADE's sizes: 30/40/50 filters, dense 30
    assert net.receptive_field == 64 and net.centre == 32
    assert net.forward_windows(torch.zeros(5, net.in_channels, 64)).shape == (5, 1)


def test_ensemble_members_are_independent() -> None:
    """Member g's output depends only on member g's weights (grouped convolutions)."""
    torch.manual_seed(2)
    net = SpikeCNN(filters=[4, 5, 6], dense=3, ensemble_size=3)
    x = torch.randn(2, net.in_channels, 80)
    before = net.forward_trace(x).detach()
    with torch.no_grad():
        net.conv2.weight[5:10] += 1.0  # member 1's second layer (5 channels per member)
    after = net.forward_trace(x).detach()
    assert torch.equal(before[:, 0], after[:, 0]) and torch.equal(before[:, 2], after[:, 2])
    assert not torch.equal(before[:, 1], after[:, 1])


def test_inference_handles_nan_stretches_and_rates() -> None:
    torch.manual_seed(3)
    net = SpikeCNN(filters=[4, 5, 6], dense=3, ensemble_size=2).eval()
    rng = np.random.default_rng(0)
    traces = rng.normal(0, 0.05, size=(3, 1200))
    traces[1, 500:560] = np.nan  # a gap: NaN there and half a window around it, inferred elsewhere
    traces[2, :] = np.nan  # a dead neuron
    out = infer(net, traces, 30.0, 25.0)
    assert out.shape == traces.shape and out.dtype == np.float32
    assert np.isfinite(out[0, 60:-60]).all() and np.isnan(out[0, :30]).all() and np.isnan(out[0, -30:]).all()
    assert np.isnan(out[1, 500:560]).all() and np.isfinite(out[1, 100:430]).all() and np.isfinite(out[1, 640:1100]).all()
    assert np.isnan(out[2]).all()
    assert (out[np.isfinite(out)] >= 0).all()
    window = infer(net, traces, 30.0, 25.0, mode="window")
    assert np.allclose(out, window, atol=1e-5, equal_nan=True)
    both = infer(net, traces, 30.0, 25.0, members=True)  # (N, 1 + E, T): the mean, then the members
    assert both.shape == (3, 3, 1200)
    assert np.allclose(both[:, 0], both[:, 1:].mean(axis=1), atol=1e-6, equal_nan=True)
    assert min_frames(net, 7.5, 25.0) == int(np.ceil(64 * 7.5 / 25.0)) + 1
    slow = infer(net, traces[:1, :300], 7.5, 25.0)  # upsampled to the model rate and back
    assert np.isfinite(slow[0, 20:-20]).all()


def test_scores_of_a_perfect_and_a_useless_prediction() -> None:
    rate = 25.0
    rng = np.random.default_rng(4)
    counts = (rng.uniform(size=2000) < 0.05).astype(float)
    spikes = np.flatnonzero(counts) / rate  # frame centres
    rec = {"frame_rate": rate, "spikes": spikes}
    perfect = recording_stats(counts[None], rec, 0.04)
    flat = recording_stats(np.full((1, 2000), counts.mean()), rec, 0.04)
    noisy = recording_stats(rng.uniform(size=(1, 2000)), rec, 0.04)
    stats = {("DS", "a"): perfect, ("DS", "b"): flat, ("DS2", "c"): noisy}
    rep = report(stats, seen={("DS2", "c")}, bin_s=0.04)
    a, b = rep["neurons"]["DS/a"], rep["neurons"]["DS/b"]
    assert a["corr"] == pytest.approx(1.0) and a["error"] == pytest.approx(0.0, abs=1e-9) and a["bias"] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(b["corr"]) and abs(b["bias"]) < 0.02  # right total, no timing
    assert rep["neurons"]["DS2/c"]["seen_in_training"] and rep["neurons_unseen"] == 2
    assert rep["corr"] == pytest.approx(1.0)  # the summary covers unseen neurons (DS2/c was trained on)


def test_net_input_channels() -> None:
    x = net_input(torch.zeros(2, 10), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert x.shape == (2, 3, 10) and torch.equal(x[1, 2], torch.full((10,), 4.0))
