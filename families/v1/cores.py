"""Cores: the convolutional feature space shared by every neuron of every session.

- `StackedCore`: conv -> batch norm -> nonlinearity, stacked (Klindt et al. 2017, NeurIPS, arXiv 1711.02653;
  Lurz et al. 2021, ICLR, "Generalization in data-driven models of primary visual cortex"). The first layer's
  filters get a Laplacian smoothness penalty, the hidden layers' a group-sparsity penalty; hidden layers can be
  depth-separable (1x1 -> depthwise kxk -> 1x1, as in neuralpredictors' SOTA SENSORIUM core).
  `KLINDT2017` holds the original settings: 3 layers of 48 channels, 13x13 then 3x3 kernels, softplus.
- `PretrainedCore`: any network of the model registry, or a vislab export with its weights, cut at a named
  node with torchvision's `create_feature_extractor`, frozen or fine-tuned, followed by batch norm.

Every core has `regularizer()` (a scalar tensor), `first_layer_weight()` (for the dashboard) and
`feature_to_pixel(xy, image_hw, feature_hw)`, which maps readout positions on the feature map back to image
pixels (x = column, y = row).
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from vislab.models.exported import build_from_spec, load_exported

Activation = Literal["elu", "softplus", "relu"]
InputRegularizer = Literal["laplace_l2norm", "laplace_l2"]

KLINDT2017: dict[str, Any] = {"layers": 3, "channels": 48, "input_kernel": 13, "hidden_kernel": 3,
                              "activation": "softplus", "depth_separable": False}
"""The core of Klindt et al. 2017 (their regularisation strengths were tuned per data set)."""

# 3x3 discrete Laplacian (neuralpredictors.regularizers.laplace)
_LAPLACE = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]).view(1, 1, 3, 3)


def laplace_penalty(weight: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Squared Laplacian of every 2-D filter of a (out, in, k, k) weight, summed; divided by the filters'
    squared norm when `normalized` (neuralpredictors' LaplaceL2norm, scale-free)."""
    out_ch, in_ch, kh, kw = weight.shape
    w = weight.reshape(out_ch * in_ch, 1, kh, kw)
    lap = F.conv2d(w, _LAPLACE.to(w), padding=1).pow(2).sum()
    return lap / w.pow(2).sum() if normalized else lap


def group_sparsity(weight: torch.Tensor) -> torch.Tensor:
    """Mean over (out, in) channel pairs of the L2 norm of the spatial kernel: drives whole inputs to zero."""
    return weight.pow(2).sum(dim=(2, 3)).sqrt().mean()


def center_penalty(weight: torch.Tensor) -> torch.Tensor:
    """Mean squared distance (in pixels) of each output channel's filter-energy centroid from the kernel centre.

    A shift of every filter together with the opposite shift of every readout position leaves the model's
    predictions unchanged; this weak penalty picks the centred solution, so readout positions are receptive-
    field positions in image pixels (cf. the centre-of-mass regulariser of openretina's Klindt core)."""
    energy = weight.pow(2).sum(1)  # (out, k, k)
    kh, kw = energy.shape[-2:]
    total = energy.sum(dim=(1, 2)).clamp(min=1e-12)
    ys = torch.arange(kh, dtype=weight.dtype, device=weight.device) - (kh - 1) / 2
    xs = torch.arange(kw, dtype=weight.dtype, device=weight.device) - (kw - 1) / 2
    cy = (energy.sum(2) * ys).sum(1) / total
    cx = (energy.sum(1) * xs).sum(1) / total
    return (cx.pow(2) + cy.pow(2)).mean()


def _activation(name: Activation) -> nn.Module:
    return {"elu": nn.ELU, "softplus": nn.Softplus, "relu": nn.ReLU}[name]()


class DepthSeparableConv2d(nn.Sequential):
    """1x1 conv -> depthwise kxk conv -> 1x1 conv (MobileNet-style; neuralpredictors' DepthSeparableConv2d)."""

    in_depth_conv: nn.Conv2d
    spatial_conv: nn.Conv2d
    out_depth_conv: nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, bias: bool = False):
        super().__init__(OrderedDict(
            in_depth_conv=nn.Conv2d(in_channels, out_channels, 1, bias=bias),
            spatial_conv=nn.Conv2d(out_channels, out_channels, kernel_size, padding=padding, groups=out_channels, bias=bias),
            out_depth_conv=nn.Conv2d(out_channels, out_channels, 1, bias=bias),
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_depth_conv(x)
        # PyTorch's CPU backward of a depthwise conv in NCHW is ~100x slower than in channels_last with more
        # than one thread (measured: 7.8 s vs 0.03 s for (16, 64, 28, 56), 7x7, 2 threads); GPUs like it too
        x = self.spatial_conv(x.contiguous(memory_format=torch.channels_last))
        return self.out_depth_conv(x)


class StackedCore(nn.Module):
    """Stacked conv-BN-nonlinearity layers; the output concatenates the layers `layers[stack:]`.

    Shapes: (B, in_channels, H, W) -> (B, channels * len(stacked layers), H', W'), with H' = H - input_kernel + 1
    without input padding (hidden layers always keep the size).
    """

    def __init__(self, in_channels: int = 1, channels: int = 64, layers: int = 4, input_kernel: int = 9,
                 hidden_kernel: int = 7, activation: Activation = "elu", pad_input: bool = False,
                 depth_separable: bool = False, bn_momentum: float = 0.9, stack: int = -1,
                 gamma_input: float = 0.0, gamma_hidden: float = 0.0, gamma_center: float = 0.0,
                 input_regularizer: InputRegularizer = "laplace_l2norm"):
        super().__init__()
        if layers < 1:
            raise ValueError(f"a stacked core needs at least one layer, got layers={layers}")
        self.gamma_input, self.gamma_hidden, self.gamma_center = gamma_input, gamma_hidden, gamma_center
        self.input_regularizer = input_regularizer
        self.depth_separable = depth_separable
        self.stack = list(range(layers))[stack:]
        self.out_channels = channels * len(self.stack)
        self.features = nn.Sequential()
        for i in range(layers):
            if i == 0:
                conv: nn.Module = nn.Conv2d(in_channels, channels, input_kernel, padding=input_kernel // 2 if pad_input else 0,
                                            bias=False)
            elif depth_separable:
                conv = DepthSeparableConv2d(channels, channels, hidden_kernel, padding=hidden_kernel // 2)
            else:
                conv = nn.Conv2d(channels, channels, hidden_kernel, padding=hidden_kernel // 2, bias=False)
            # no conv bias: batch norm's shift takes its place
            self.features.add_module(f"layer{i}", nn.Sequential(OrderedDict(
                conv=conv, norm=nn.BatchNorm2d(channels, momentum=bn_momentum), nonlin=_activation(activation))))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for layer in self.features:
            x = layer(x)
            outputs.append(x)
        return torch.cat([outputs[i] for i in self.stack], dim=1) if len(self.stack) > 1 else outputs[-1]

    def first_layer_weight(self) -> torch.Tensor:
        return cast(nn.Conv2d, self.features[0].conv).weight  # (channels, in_channels, k, k)

    def regularizer(self) -> torch.Tensor:
        w0 = self.first_layer_weight()
        reg = self.gamma_input * laplace_penalty(w0, normalized=self.input_regularizer == "laplace_l2norm")
        if self.gamma_hidden and not self.depth_separable and len(self.features) > 1:
            hidden = [group_sparsity(cast(nn.Conv2d, layer.conv).weight) for layer in self.features[1:]]
            reg = reg + self.gamma_hidden * torch.stack(hidden).mean()
        if self.gamma_center:
            spatial = [m.weight for m in self.features.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
            reg = reg + self.gamma_center * torch.stack([center_penalty(w) for w in spatial]).sum()
        return reg

    @staticmethod
    def feature_to_pixel(xy: torch.Tensor, image_hw: tuple[int, int], feature_hw: tuple[int, int]) -> torch.Tensor:
        """Stride 1, symmetric 'valid' cropping: feature pixel i sits on image pixel i + (H - H') / 2."""
        offset = torch.tensor([(image_hw[1] - feature_hw[1]) / 2, (image_hw[0] - feature_hw[0]) / 2], dtype=xy.dtype)
        return xy + offset

    @staticmethod
    def pixel_to_feature(xy: torch.Tensor, image_hw: tuple[int, int], feature_hw: tuple[int, int]) -> torch.Tensor:
        return xy - StackedCore.feature_to_pixel(torch.zeros_like(xy), image_hw, feature_hw)


class PretrainedCore(nn.Module):
    """A registry network or a vislab export cut at node `layer`, then batch norm and a nonlinearity.

    `backbone_spec` is `{"builder": "vislab....:fn", "kwargs": {...}}` (as in an export's model.json); a
    network taking 3 channels gets grey images repeated. Frozen: no gradients and batch norm in eval mode.
    """

    def __init__(self, backbone_spec: dict[str, Any], layer: str, in_channels: int = 1, frozen: bool = True,
                 bn_momentum: float = 0.1, activation: Activation = "elu", weights: str | None = None):
        super().__init__()
        from torchvision.models.feature_extraction import (  # torch: kept off the CLI's start-up path
            create_feature_extractor,
            get_graph_node_names,
        )

        net = load_exported(weights)[0] if weights else build_from_spec(backbone_spec)
        nodes = get_graph_node_names(net.eval())[1]
        if layer not in nodes:

            close = difflib.get_close_matches(layer, nodes, n=3, cutoff=0.3)
            raise ValueError(f"backbone has no node '{layer}' (closest: {close}; all: {nodes[:8]} ...)")
        self.frozen = frozen
        self.in_channels = in_channels
        first_conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
        self.backbone_channels = first_conv.in_channels
        self.features = create_feature_extractor(net, return_nodes={layer: "out"})
        if frozen:
            self.features.requires_grad_(False)
        with torch.no_grad():
            probe = self.features(torch.zeros(1, self.backbone_channels, 64, 64))["out"]
        self.out_channels = int(probe.shape[1])
        self.norm = nn.BatchNorm2d(self.out_channels, momentum=bn_momentum)
        self.nonlin = _activation(activation)

    def train(self, mode: bool = True) -> PretrainedCore:
        super().train(mode)
        if self.frozen:
            self.features.eval()  # frozen batch norms keep the backbone's statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.backbone_channels:
            x = x.expand(-1, self.backbone_channels, -1, -1) if x.shape[1] == 1 else x
        return self.nonlin(self.norm(self.features(x)["out"]))

    def first_layer_weight(self) -> torch.Tensor:
        return next(m for m in self.features.modules() if isinstance(m, nn.Conv2d)).weight

    def regularizer(self) -> torch.Tensor:
        return self.norm.weight.new_zeros(())

    @staticmethod
    def feature_to_pixel(xy: torch.Tensor, image_hw: tuple[int, int], feature_hw: tuple[int, int]) -> torch.Tensor:
        """Strided, 'same'-padded backbone: feature pixel i covers image pixels [i*s, (i+1)*s)."""
        scale = torch.tensor([image_hw[1] / feature_hw[1], image_hw[0] / feature_hw[0]], dtype=xy.dtype)
        return (xy + 0.5) * scale - 0.5

    @staticmethod
    def pixel_to_feature(xy: torch.Tensor, image_hw: tuple[int, int], feature_hw: tuple[int, int]) -> torch.Tensor:
        scale = torch.tensor([image_hw[1] / feature_hw[1], image_hw[0] / feature_hw[0]], dtype=xy.dtype)
        return (xy + 0.5) / scale - 0.5


Core = StackedCore | PretrainedCore


def build_core(kind: Literal["stacked", "pretrained"], in_channels: int, **kwargs: Any) -> Core:
    if kind == "stacked":
        return StackedCore(in_channels=in_channels, **kwargs)
    return PretrainedCore(in_channels=in_channels, **kwargs)
