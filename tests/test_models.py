"""Generated from the registries (timm's `test_models.py` pattern): every architecture name and every export
builder is built, run forward and backward on a tiny input, and checked for shape and finiteness.
A new architecture or family network is tested by registering it; nothing here lists them by hand."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision.models as tvm

from vislab.models.registry import BUILDERS, EXAMPLES, create_model, list_models
from vislab.train.families import load_all_builders

load_all_builders()  # the families' networks register their builders on import

MAX_PARAMS = 10_000_000  # like timm's test filters: larger networks cost tens of seconds of CPU each here


def _weights_meta(name: str) -> dict[str, Any]:
    try:
        return dict(tvm.get_model_weights(name).DEFAULT.meta)  # type: ignore[attr-defined]
    except (ValueError, AttributeError):  # vislab's own networks have no torchvision weights
        return {}


ARCHS = [n for n in list_models() if _weights_meta(n).get("num_params", 0) <= MAX_PARAMS]
TOO_LARGE = sorted(set(list_models()) - set(ARCHS))


def _finite_backward(out: torch.Tensor, net: torch.nn.Module) -> None:
    assert torch.isfinite(out).all(), "non-finite output"
    trainable = [p for p in net.parameters() if p.requires_grad]
    if not trainable:
        return
    out.float().square().mean().backward()
    grads = [p.grad for p in trainable if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads), "non-finite gradient"


@pytest.mark.parametrize("name", ARCHS)
def test_architecture_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    min_size = _weights_meta(name).get("min_size", (32, 32))
    size = max(32, *min_size)
    net = create_model(name, num_classes=4).train()
    out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2, 4)
    _finite_backward(out, net)


def test_every_architecture_is_tested_or_named_as_too_large() -> None:
    assert len(ARCHS) > 20  # torchvision's classifiers below the cap, and vislab's own
    assert {"tiny_cnn", "small_cnn", "efficientnet_lite0", "googlenet", "mobilenet_v3_small"} <= set(ARCHS)
    for name in TOO_LARGE:
        assert _weights_meta(name)["num_params"] > MAX_PARAMS


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_export_builder_forward_backward(builder: str) -> None:
    torch.manual_seed(0)
    kwargs, inputs = EXAMPLES[builder]()
    net = BUILDERS[builder](**kwargs).train()
    out = net(*inputs)
    assert out.shape[0] == len(inputs[0])
    _finite_backward(out, net)


def test_every_family_network_has_a_stable_builder() -> None:
    assert {"create_model", "backbone", "spike_cnn", "stm", "v1_encoder", "saliency_readout"} <= set(BUILDERS)
