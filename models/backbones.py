"""One backbone interface for every pretrained network: timm's, torchvision classifiers and EfficientNet-Lite0.

A `Backbone` splits a classification network the way timm does (a timm network, `timm/<name>`, already has
this interface: `TimmBackbone` delegates to it; torchvision's and Lite0 are cut by their `Layout`):

    fmap = backbone.forward_features(x)                  # (B, C, h, w), the last feature map
    emb = backbone.forward_head(fmap, pre_logits=True)   # (B, num_features), what a linear probe sees
    logits = backbone.forward_head(fmap)                 # (B, num_classes)
    backbone.reset_classifier(10)                        # a fresh head (0 = no head: an embedding model)
    core = backbone.feature_extractor(["_blocks.10", "_swish_1"])  # several named layers at once
    core.channels, core.strides                          # {'_blocks.10': 112, ...}, {'_blocks.10': 16, ...}

The trunk is cut out of the original network with `torchvision.models.feature_extraction` (no slicing of
`children()`), so its parameter names stay the original ones and pretrained state dicts load unchanged.
Weights and the metadata that travels with them (normalisation, input size, class names, provenance) come
from `vislab.models.pretrained`; `load_backbone(path_or_name)` is the entry point for other families:

    from vislab.models.backbones import load_backbone
    bb = load_backbone("efficientnet_lite0")                  # offline ImageNet weights
    bb = load_backbone("ResNet50_Weights.IMAGENET1K_V2")       # torchvision (hub cache or download)
    bb = load_backbone("timm/convnext_tiny")                  # timm (Hugging Face hub cache or download)
    bb = load_backbone("exports/my-run-backbone")              # `vislab export RUN --backbone-only`
    bb = load_backbone("weights.safetensors", arch="resnet18", key_map={"module.": ""})
    bb.meta.mean, bb.meta.std, bb.meta.input_size, bb.meta.class_names, bb.meta.provenance
"""

from __future__ import annotations

import copy
import difflib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch.model import MBConvBlock
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
from torchvision.ops import StochasticDepth

from vislab.models.pretrained import WeightsMeta, arch_of_source, load_network
from vislab.models.registry import (
    create_model,
    is_timm,
    register_builder,
    register_model,
    unknown_model_message,
)

LITE0 = "efficientnet_lite0"


@dataclass(frozen=True)
class Layout:
    """Where a classification network's trunk ends and its head begins."""

    feature_node: str
    """FX node (or module name) whose output is the last feature map (B, C, h, w)."""
    pool: str | None
    """Attribute of the network that pools the feature map; None = global average pooling."""
    head: tuple[str, ...]
    """Attributes forming the head, in order; the last `nn.Linear` in them is the classifier."""
    flatten_first: bool = True
    """Flatten (B, C, 1, 1) before the head (ConvNeXt's head normalises in 2-D and flattens itself)."""


_RESNET = Layout("layer4", "avgpool", ("fc",))
_FEATURES = Layout("features", "avgpool", ("classifier",))
LAYOUTS: dict[str, Layout] = {
    "resnet": _RESNET, "resnext": _RESNET, "wide_resnet": _RESNET,
    "regnet": Layout("trunk_output", "avgpool", ("fc",)),
    "efficientnet_lite": Layout("_swish_1", "_avg_pooling", ("_dropout", "_fc")),
    "efficientnet": _FEATURES, "mobilenet_v3": _FEATURES, "vgg": _FEATURES, "alexnet": _FEATURES,
    "mobilenet_v2": Layout("features", None, ("classifier",)),
    "convnext": Layout("features", "avgpool", ("classifier",), flatten_first=False),
    "densenet": Layout("relu", None, ("classifier",)),
    "small_cnn": _FEATURES, "tiny_cnn": _FEATURES,
}


def layout_of(arch: str) -> Layout:
    """The layout of an architecture family, by longest matching name prefix."""
    matches = [k for k in LAYOUTS if arch.startswith(k)]
    if not matches:
        raise ValueError(f"architecture '{arch}' has no backbone layout; supported families: "
                         f"{', '.join(sorted(LAYOUTS))} (add one to LAYOUTS in {__name__})")
    return LAYOUTS[max(matches, key=len)]


def check_arch(arch: str) -> str | None:
    """None if `arch` can be a backbone, else a one-line reason (unknown name or unsupported family)."""
    msg = unknown_model_message(arch)
    if msg or is_timm(arch):  # every timm network splits into features and head by itself
        return msg
    try:
        layout_of(arch)
    except ValueError as e:
        return str(e)
    return None


@register_model(LITE0)
def efficientnet_lite0(num_classes: int, in_channels: int = 3, dropout: float | None = None) -> nn.Module:
    """EfficientNet-Lite0 (Tan & Le 2019; no squeeze-excitation, ReLU6) from `efficientnet-lite-pytorch`."""
    if in_channels != 3:
        raise ValueError(f"{LITE0} takes 3 input channels, not {in_channels}")
    # Static TF-'SAME' padding computed for 224 px: identical to dynamic SAME padding for every input
    # whose side is a multiple of 32, and traceable for TorchScript/ONNX with a dynamic batch.
    extra = {} if dropout is None else {"dropout_rate": dropout}
    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes, **extra)


LEAF_MODULES = [MBConvBlock, StochasticDepth]
"""Modules whose forward branches on `self.training` (MBConvBlock's drop-connect: `if not training: return x`):
traced as leaves, so one graph serves both modes."""


def _extractor(net: nn.Module, nodes: dict[str, str]) -> torch.fx.GraphModule:
    """`create_feature_extractor` as ONE plain GraphModule (deep-copies and pickles like any module)."""
    with warnings.catch_warnings():  # "eval nodes are a subsequence of train nodes": checked below
        warnings.simplefilter("ignore", UserWarning)
        dual = create_feature_extractor(net, return_nodes=nodes, tracer_kwargs={"leaf_modules": LEAF_MODULES})
    train_ops = [n.target for n in dual.train_graph.nodes]
    eval_ops = [n.target for n in dual.eval_graph.nodes]
    if train_ops != eval_ops:
        raise ValueError(f"{type(net).__name__}: training and evaluation graphs differ; add the module that "
                         f"branches on self.training to LEAF_MODULES in {__name__}")
    return torch.fx.GraphModule(dual, dual.eval_graph)


def _flat_modules(modules: Sequence[nn.Module]) -> list[nn.Module]:
    out: list[nn.Module] = []
    for m in modules:
        out.extend(_flat_modules(list(m)) if isinstance(m, nn.Sequential) else [m])
    return out


class Backbone(nn.Module):
    """A classification network as trunk + pool + pre-logits + classifier (see module docstring)."""

    def __init__(self, arch: str, net: nn.Module, meta: WeightsMeta | None = None):
        super().__init__()
        layout = layout_of(arch)
        self.arch = arch
        self.meta = meta or WeightsMeta()
        self.body: nn.Module = _extractor(net, {layout.feature_node: "features"})
        self.pool: nn.Module = getattr(net, layout.pool) if layout.pool else nn.AdaptiveAvgPool2d(1)
        head = _flat_modules([getattr(net, name) for name in layout.head])
        if not isinstance(head[-1], nn.Linear):
            raise ValueError(f"{arch}: the head {layout.head} does not end in nn.Linear")
        self.pre_logits: nn.Module = nn.Sequential(*head[:-1])
        self.classifier: nn.Module = head[-1]
        self.num_features: int = head[-1].in_features
        self.flatten_first = layout.flatten_first

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features if isinstance(self.classifier, nn.Linear) else 0

    def reset_classifier(self, num_classes: int) -> None:
        """A freshly initialised head of `num_classes` outputs (0 = none: forward returns pre-logits)."""
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.meta = WeightsMeta(**{**self.meta.to_dict(), "class_names": None})

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)["features"]  # (B, 3, H, W) -> (B, C, H/stride, W/stride)

    def forward_head(self, fmap: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(fmap)  # (B, C, 1, 1) (VGG/AlexNet: (B, C, 7, 7))
        if self.flatten_first:
            x = torch.flatten(x, 1)
        x = self.pre_logits(x)  # (B, num_features)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ----- several named layers at once -----
    def layer_names(self) -> list[str]:
        """FX node names of the trunk, input to output: the valid `feature_extractor` layers (module names
        such as 'layer3' or '_blocks.10' also work: they mean the module's output)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            tracer = {"leaf_modules": LEAF_MODULES}
            names = get_graph_node_names(create_model(self.arch, num_classes=1000), tracer_kwargs=tracer)[1]
        node = layout_of(self.arch).feature_node
        last = max(i for i, n in enumerate(names) if n == node or n.startswith(node + "."))
        return names[: last + 1]

    def feature_extractor(self, layers: Sequence[str], frozen: bool = True,
                          input_size: int | None = None) -> FeatureExtractor:
        """The named trunk layers' outputs, with their channels and strides (a new module, sharing nothing)."""
        names = self.layer_names()
        bad = [layer for layer in layers if layer not in names and not any(n.startswith(layer + ".") for n in names)]
        if bad:
            close = difflib.get_close_matches(bad[0], names, n=3)
            raise ValueError(f"{self.arch}: unknown layer '{bad[0]}' (closest: {close}; "
                             f"Backbone.layer_names() lists all {len(names)})")
        net = create_model(self.arch, num_classes=max(1, self.num_classes))
        # the trunk keeps the original parameter names, so its state dict fits the rebuilt network
        result = net.load_state_dict(self.body.state_dict(), strict=False)
        if result.unexpected_keys:
            raise ValueError(f"{self.arch}: trunk tensors {result.unexpected_keys[:3]} not in a fresh network")
        size = input_size or self.meta.input_size or 224
        return FeatureExtractor(net, list(layers), frozen=frozen, input_size=size)


class FeatureExtractor(nn.Module):
    """Outputs of several named layers, as a list in the order asked for; `channels` and `strides` by layer."""

    def __init__(self, net: nn.Module, layers: list[str], frozen: bool = True, input_size: int = 224):
        super().__init__()
        self.layers = layers
        self.frozen = frozen
        self.body: nn.Module = _extractor(net, {layer: layer for layer in layers})
        if frozen:
            self.body.requires_grad_(False)
        self.channels, self.strides = self._probe(input_size)
        self.train(self.training)

    @torch.no_grad()
    def _probe(self, size: int) -> tuple[dict[str, int], dict[str, int]]:
        was = self.body.training
        self.body.eval()
        out = self.body(torch.zeros(1, 3, size, size))
        self.body.train(was)
        return ({k: int(v.shape[1]) for k, v in out.items()},
                {k: max(1, round(size / v.shape[-1])) for k, v in out.items()})

    def train(self, mode: bool = True) -> FeatureExtractor:
        super().train(mode)
        if self.frozen:  # frozen features: BN statistics and dropout stay in evaluation mode
            self.body.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.body(x)
        return [out[layer] for layer in self.layers]  # each (B, C_l, H / stride_l, W / stride_l)


class TimmBackbone(Backbone):
    """A timm network (`timm/<name>`): its own `forward_features` / `forward_head(pre_logits=True)`, its
    feature pyramid from `feature_info` and `forward_intermediates`; only the classifier is split off.

    `body` is the timm network with `reset_classifier(0)` (its pooling and pre-logit layers stay inside it,
    so a probe's frozen `body` includes them); `classifier` is the original head's nn.Linear."""

    def __init__(self, arch: str, net: nn.Module, meta: WeightsMeta | None = None):
        nn.Module.__init__(self)
        self.arch = arch
        self.meta = meta or WeightsMeta()
        classifier = net.get_classifier()  # type: ignore[operator]
        net.reset_classifier(0)  # type: ignore[operator]
        self.body = net
        self.pool = nn.Identity()
        self.pre_logits = nn.Identity()
        self.classifier = classifier if isinstance(classifier, nn.Linear) else nn.Identity()
        self.num_features = int(getattr(net, "head_hidden_size", None) or net.num_features)  # type: ignore[arg-type]
        self.flatten_first = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(x)  # type: ignore[operator]

    def forward_head(self, fmap: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.body.forward_head(fmap, pre_logits=True)  # type: ignore[operator]  # (B, num_features)
        return x if pre_logits else self.classifier(x)

    def layer_names(self) -> list[str]:
        """timm's feature pyramid, input to output (`feature_info`: e.g. 'layer1'..'layer4', 'stages.0'..)."""
        return [str(f["module"]) for f in self.body.feature_info]  # type: ignore[union-attr]

    def feature_extractor(self, layers: Sequence[str], frozen: bool = True,
                          input_size: int | None = None) -> FeatureExtractor:
        names = self.layer_names()
        bad = [layer for layer in layers if layer not in names]
        if bad:
            close = difflib.get_close_matches(bad[0], names, n=3)
            raise ValueError(f"{self.arch}: unknown layer '{bad[0]}' (closest: {close}; timm's feature_info "
                             f"has {', '.join(names)})")
        return TimmFeatureExtractor(copy.deepcopy(self.body), list(layers), frozen=frozen)


class TimmFeatureExtractor(FeatureExtractor):
    """Several levels of timm's feature pyramid at once (`forward_intermediates`), channels and strides
    from `feature_info` (no probing pass)."""

    def __init__(self, net: nn.Module, layers: list[str], frozen: bool = True):
        nn.Module.__init__(self)
        info = {str(f["module"]): (i, f) for i, f in enumerate(net.feature_info)}  # type: ignore[union-attr,arg-type]
        self.layers = layers
        self.frozen = frozen
        self.indices = sorted({info[layer][0] for layer in layers})
        self.body = net
        if frozen:
            self.body.requires_grad_(False)
        self.channels = {layer: int(info[layer][1]["num_chs"]) for layer in layers}
        self.strides = {layer: int(info[layer][1]["reduction"]) for layer in layers}
        self._at = {layer: self.indices.index(info[layer][0]) for layer in layers}
        self.train(self.training)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.body.forward_intermediates(x, indices=self.indices, intermediates_only=True)  # type: ignore[operator]
        return [out[self._at[layer]] for layer in self.layers]  # each (B, C_l, H / stride_l, W / stride_l)


def make_backbone(arch: str, net: nn.Module, meta: WeightsMeta | None = None) -> Backbone:
    """The backbone of a freshly built or loaded network: timm's own interface, or cut by its layout."""
    return TimmBackbone(arch, net, meta) if is_timm(arch) else Backbone(arch, net, meta)


# ---------------------------------------------------------------------------------------- constructors
@register_builder("backbone", lambda: ({"name": "efficientnet_lite0", "num_classes": 0},
                                       (torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)),)))
def build_backbone(name: str, num_classes: int = 0, in_channels: int = 3) -> Backbone:
    """A randomly initialised backbone (the export `spec` builder; weights are loaded afterwards)."""
    backbone = make_backbone(name, create_model(name, num_classes=max(1, num_classes), in_channels=in_channels))
    if num_classes == 0:
        backbone.reset_classifier(0)
    return backbone


def pretrained_backbone(name: str, weights: str | None, *, num_classes: int | None = None,
                        key_map: dict[str, str] | None = None, download: bool = True) -> Backbone:
    """`name` with `weights` (see `vislab.models.pretrained.load_network`); a new head if `num_classes`
    differs from the weights' (0 = no head), the pretrained head otherwise."""
    net, meta = load_network(name, weights, key_map=key_map or {}, download=download,
                             keep_classifier=num_classes is None)
    backbone = net if isinstance(net, Backbone) else make_backbone(name, net)
    backbone.meta = meta
    if num_classes is not None and num_classes != backbone.num_classes:
        backbone.reset_classifier(num_classes)
    return backbone


def configured_backbone(b: Any, num_classes: int | None, seed: int) -> Backbone:
    """A config's `model.backbone`. Random parts (weights: null, a new head) are drawn from `seed`, so every
    process, every rebuild and the feature caches get the same network."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return pretrained_backbone(b.name, b.weights, num_classes=num_classes, key_map=dict(b.key_map),
                                   download=b.download)


def load_backbone(source: str | Path, *, arch: str | None = None, key_map: dict[str, str] | None = None,
                  num_classes: int | None = None, download: bool = True) -> Backbone:
    """A pretrained backbone from one string: an export directory, a weights file (with `arch`), a
    torchvision weights enum name ('ResNet50_Weights.IMAGENET1K_V2'), or an architecture name (its default
    weights: 'efficientnet_lite0', 'resnet50', 'timm/convnext_tiny'). `num_classes=None` keeps the pretrained head."""
    name, weights = arch_of_source(str(source), arch)
    return pretrained_backbone(name, weights, num_classes=num_classes, key_map=key_map, download=download)


def parameter_names(backbone: nn.Module) -> list[str]:
    return [n for n, _ in backbone.named_parameters()]

