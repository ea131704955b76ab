"""Models by name: `create_model(name, num_classes=...)` is the one constructor.

Every torchvision classification architecture (AlexNet, VGG, ResNet, GoogLeNet, Inception-v3,
EfficientNet, ConvNeXt, ...) is available under its torchvision name through `torchvision.models.get_model`;
vislab's own networks register with `@register_model`. An unknown name lists the closest valid names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from torch import nn

ModelFn = Callable[..., nn.Module]
_OWN: dict[str, ModelFn] = {}


def register_model(name: str) -> Callable[[ModelFn], ModelFn]:
    def wrap(fn: ModelFn) -> ModelFn:
        if name in _OWN or name in _torchvision_names():
            raise ValueError(f"model '{name}' is already registered")
        _OWN[name] = fn
        return fn

    return wrap


@lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...]:
    import torchvision.models as tvm

    return tuple(tvm.list_models(module=tvm))


def _load_own() -> None:
    from vislab.models import (
        backbones,  # noqa: F401  (registers efficientnet_lite0)
        small,  # noqa: F401  (registers vislab's own networks)
    )


def list_models() -> list[str]:
    _load_own()
    return sorted(set(_OWN) | set(_torchvision_names()))


def unknown_model_message(name: str) -> str | None:
    """None if `name` exists, else a one-line explanation with the closest valid names."""
    names = list_models()
    if name in names:
        return None
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "see `vislab models` for the list"
    return f"unknown architecture '{name}': {hint}"


# torchvision networks whose constructors need non-default arguments to behave as plain classifiers
_TV_DEFAULTS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def create_model(name: str, *, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """A freshly initialised network. Pretrained weights are loaded by `models.backbones`, not here."""
    msg = unknown_model_message(name)
    if msg:
        raise ValueError(msg)
    if name in _OWN:
        return _OWN[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    if in_channels != 3:
        raise ValueError(f"torchvision's '{name}' takes 3 input channels, not {in_channels}")
    import torchvision.models as tvm

    return tvm.get_model(name, weights=None, num_classes=num_classes, **{**_TV_DEFAULTS.get(name, {}), **kwargs})
