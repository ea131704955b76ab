"""Models by name: `create_model(name, num_classes=...)` is the one constructor.

Every torchvision classification architecture (AlexNet, VGG, ResNet, GoogLeNet, Inception-v3,
EfficientNet, ConvNeXt, ...) is available under its torchvision name through `torchvision.models.get_model`;
every timm architecture as `timm/<name>` (`timm/convnext_tiny`) through `timm.create_model`;
vislab's own networks register with `@register_model`. An unknown name lists the closest valid names.

Exports rebuild their network from a *builder* named in model.json (`{"builder": "spike_cnn", "kwargs": ...}`):
builders register with `@register_builder(name)` under stable names that never change once exports exist;
`ALIASES` maps the module paths that exports stored before families had their own folders.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from torch import nn

ModelFn = Callable[..., nn.Module]
_OWN: dict[str, ModelFn] = {}
TIMM = "timm/"
"""Prefix of timm architectures: `timm/convnext_tiny` (a pretrained tag may follow: `timm/convnext_tiny.fb_in1k`)."""


def is_timm(name: str) -> bool:
    return name.startswith(TIMM)


@lru_cache(maxsize=1)
def timm_names() -> tuple[str, ...]:
    import timm  # timm: slow to import, only for timm/ names

    return tuple(TIMM + n for n in timm.list_models())


def register_model(name: str) -> Callable[[ModelFn], ModelFn]:
    def wrap(fn: ModelFn) -> ModelFn:
        if name in _OWN or name in _torchvision_names():
            raise ValueError(f"model '{name}' is already registered")
        _OWN[name] = fn
        return fn

    return wrap


Builder = Callable[..., nn.Module]
Example = Callable[[], "tuple[dict[str, Any], tuple[Any, ...]]"]
"""() -> (tiny builder kwargs, forward inputs): what the generated model tests build and run."""
BUILDERS: dict[str, Builder] = {}
EXAMPLES: dict[str, Example] = {}
ALIASES = {  # builder strings written by vislab before the family layout -> stable names
    "vislab.models.registry:create_model": "create_model",
    "vislab.models.backbones:build_backbone": "backbone",
    "vislab.models.spikes:build_spike_cnn": "spike_cnn",
    "vislab.models.stm:build_stm": "stm",
    "vislab.models.v1.encoder:build_encoder": "v1_encoder",
    "vislab.models.saliency:build_saliency_model": "saliency_readout",
}


B = TypeVar("B", bound=Builder)


def register_builder(name: str, example: Example) -> Callable[[B], B]:
    """Register an export builder under a stable `name`, with a tiny example every test suite run builds."""

    def wrap(fn: B) -> B:
        if name in BUILDERS and BUILDERS[name] is not fn:
            raise ValueError(f"builder '{name}' is already registered")
        BUILDERS[name] = fn
        EXAMPLES[name] = example
        return fn

    return wrap


def get_builder(name: str) -> Builder:
    """The builder an export names (a stable name or an old module path); unknown -> ValueError."""
    _load_own()
    key = ALIASES.get(name, name)
    if key not in BUILDERS:
        family_hint = " (family networks load through `vislab.load_exported`)" if key in ALIASES.values() else ""
        raise ValueError(f"unknown model builder {name!r}{family_hint}; known: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[key]


@lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...]:
    import torchvision.models as tvm  # torch: kept off the CLI's start-up path

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
    if is_timm(name):
        names = list(timm_names())
        name = name.split(".")[0]  # timm/<arch>.<pretrained tag>: the tag is checked with the weights
        if name in names:
            return None
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "see `vislab models timm/`"
        return f"unknown timm architecture '{name}': {hint}"
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


def _images(channels: int = 3, size: int = 32) -> tuple[Any, ...]:
    import torch  # only when a test asks for an example input

    return (torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0)),)


@register_builder("create_model", lambda: ({"name": "tiny_cnn", "num_classes": 3}, _images()))
def create_model(name: str, *, num_classes: int, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """A freshly initialised network. Pretrained weights are loaded by `models.backbones`, not here."""
    msg = unknown_model_message(name)
    if msg:
        raise ValueError(msg)
    if name in _OWN:
        return _OWN[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    if is_timm(name):
        import timm  # timm: slow to import, only for timm/ names

        return timm.create_model(name[len(TIMM):], pretrained=False, num_classes=num_classes, in_chans=in_channels,
                                 **kwargs)
    if in_channels != 3:
        raise ValueError(f"torchvision's '{name}' takes 3 input channels, not {in_channels}")
    import torchvision.models as tvm  # torch: kept off the CLI's start-up path

    return tvm.get_model(name, weights=None, num_classes=num_classes, **{**_TV_DEFAULTS.get(name, {}), **kwargs})
