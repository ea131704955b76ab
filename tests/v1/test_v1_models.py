"""V1 cores, readouts and the Encoder: shapes, gradients, penalties, geometry, rebuild from plain data."""

from __future__ import annotations

import pytest
import torch

from vislab.families.v1.cores import KLINDT2017, PretrainedCore, StackedCore, center_penalty, laplace_penalty
from vislab.families.v1.encoder import build_encoder, inverse_output, output_nonlinearity
from vislab.families.v1.readouts import FactorizedReadout, GaussianReadout

SESSIONS = {"a": {"num_neurons": 5, "image_shape": [1, 20, 24], "coordinates_dim": 0},
            "b": {"num_neurons": 3, "image_shape": [1, 20, 24], "coordinates_dim": 2}}
STACKED = {"kind": "stacked", "channels": 4, "layers": 2, "input_kernel": 5, "hidden_kernel": 3, "gamma_input": 1.0,
           "gamma_hidden": 0.1, "gamma_center": 0.1}
CORES = {
    "stacked": STACKED,
    "klindt2017": {"kind": "stacked", **{**KLINDT2017, "channels": 4}, "gamma_input": 1.0, "gamma_hidden": 0.1},
    "depth_separable": {**STACKED, "depth_separable": True, "layers": 3, "pad_input": True},
    "pretrained": {"kind": "pretrained", "layer": "features.1.2",
                   "backbone_spec": {"builder": "create_model",
                                     "kwargs": {"name": "tiny_cnn", "num_classes": 10}}},
}
READOUTS = {
    "gaussian_full": {"kind": "gaussian", "gamma": 0.01},
    "gaussian_isotropic": {"kind": "gaussian", "gamma": 0.01, "gauss_type": "isotropic", "init_sigma": 0.5},
    "factorized": {"kind": "factorized", "gamma": 0.01},
}


@pytest.mark.parametrize("core", sorted(CORES))
@pytest.mark.parametrize("readout", sorted(READOUTS))
def test_forward_backward_shapes(core: str, readout: str) -> None:
    torch.manual_seed(0)
    model = build_encoder(CORES[core], READOUTS[readout], SESSIONS, "elu1")
    if readout.startswith("gaussian"):
        model.readouts["b"].set_coordinates(torch.randn(3, 3))
    x = torch.randn(6, 1, 20, 24)
    out_a, out_b = model(x, "a"), model(x, "b")
    assert out_a.shape == (6, 5) and out_b.shape == (6, 3) and model(x).shape == (6, 8)
    assert (out_a > 0).all() and torch.isfinite(out_a).all()
    loss = out_a.sum() + out_b.sum() + model.regularizer()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.regularizer().ndim == 0
    model.constrain()
    if readout == "factorized":
        assert all((model.readouts[s].mask >= 0).all() and (model.readouts[s].features >= 0).all() for s in "ab")
    model.eval()
    assert torch.equal(model(x, "a"), model(x, "a"))  # eval reads at the mean position: deterministic


def test_rebuild_from_plain_data_gives_identical_outputs() -> None:
    torch.manual_seed(1)
    kwargs = {"core": CORES["depth_separable"], "readout": READOUTS["gaussian_full"], "sessions": SESSIONS, "output": "softplus"}
    model = build_encoder(**kwargs)
    model.readouts["b"].set_coordinates(torch.randn(3, 3))
    model.train()
    model(torch.randn(8, 1, 20, 24), "a")  # move the batch-norm statistics away from their initial values
    twin = build_encoder(**kwargs)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(4, 1, 20, 24)
    assert torch.equal(model.eval()(x), twin.eval()(x))


def test_gaussian_samples_in_training_and_maps_positions_to_pixels() -> None:
    readout = GaussianReadout((4, 16, 20), 2, init_sigma=0.2)
    readout.mu.data = torch.tensor([[-1.0, -1.0], [1.0, 0.0]])
    x = torch.randn(3, 4, 16, 20)
    assert not torch.equal(readout.train()(x), readout(x))  # positions sampled around the mean
    pos = readout.positions()
    assert torch.allclose(pos, torch.tensor([[0.0, 0.0], [19.0, 7.5]]))
    # a 5x5 'valid' first layer crops 2 pixels on each side: feature (0, 0) sits on image pixel (2, 2)
    assert torch.allclose(StackedCore.feature_to_pixel(pos, (20, 24), (16, 20)), pos + 2)
    readout.eval()
    feats = torch.zeros(1, 4, 16, 20)
    feats[0, :, 0, 0] = 1.0  # only the corner is active: only neuron 0 reads it
    with torch.no_grad():
        out = readout(feats) - readout.bias
    assert out[0, 0] == pytest.approx(1.0) and out[0, 1] == pytest.approx(0.0)


def test_cortex_predictor_positions_follow_coordinates() -> None:
    readout = GaussianReadout((4, 8, 8), 10, coordinates_dim=2)
    readout.set_coordinates(torch.randn(10, 3) * 100)
    assert readout.coordinates.abs().max() == pytest.approx(1.0)
    assert readout.mu is None and readout.mean_positions().shape == (10, 2)


def test_factorized_positions_are_mask_centres() -> None:
    readout = FactorizedReadout((3, 6, 8), 2)
    readout.mask.data.zero_()
    readout.mask.data[0, 1, 2] = 1.0
    readout.mask.data[1, 4, 6] = readout.mask.data[1, 4, 7] = 1.0
    assert torch.allclose(readout.positions(), torch.tensor([[2.0, 1.0], [6.5, 4.0]]))


def test_penalties() -> None:
    smooth = torch.outer(torch.hann_window(9, periodic=False), torch.hann_window(9, periodic=False)).view(1, 1, 9, 9)
    noisy = smooth + 0.3 * torch.randn(1, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    assert laplace_penalty(noisy) > 2 * laplace_penalty(smooth)
    assert laplace_penalty(3 * smooth) == pytest.approx(float(laplace_penalty(smooth)), rel=1e-5)  # scale-free
    assert center_penalty(smooth) == pytest.approx(0.0, abs=1e-10)
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 6] = -2.0
    assert center_penalty(dot) == pytest.approx(4.0)  # energy 2 px right of the centre


def test_output_nonlinearity_inverse_and_bias_init() -> None:
    rates = torch.tensor([0.05, 0.5, 1.0, 3.0])
    for kind in ("elu1", "softplus"):
        assert torch.allclose(output_nonlinearity(inverse_output(rates, kind), kind), rates, atol=1e-5)  # type: ignore[arg-type]
    model = build_encoder(CORES["stacked"], READOUTS["factorized"], SESSIONS, "elu1")
    model.initialize_bias("a", torch.full((5,), 2.0))
    assert torch.allclose(model.readouts["a"].bias, torch.ones(5))


def test_pretrained_core_rejects_unknown_layer_and_freezes() -> None:
    spec = CORES["pretrained"]["backbone_spec"]
    with pytest.raises(ValueError, match="no node 'features.9'"):
        PretrainedCore(spec, "features.9")
    core = PretrainedCore(spec, "features.1.2", frozen=True).train()
    assert not any(p.requires_grad for p in core.features.parameters()) and not core.features.training
