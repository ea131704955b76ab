"""`Encoder(core, readouts)`: images -> one positive rate per neuron, one readout per recording session.

    from vislab.models.exported import load_exported
    model, info = load_exported("exports/v1-run")          # no Lightning, no pickle
    rates = model(images, "session-id")                     # (B, neurons of that session)
    rates = model(images)                                   # all sessions concatenated (info["sessions"])
    model.rf_positions("session-id")                        # (neurons, 2) receptive-field centres, pixels (x, y)

Images are normalised per session as the export's model.json says; rates are in units of each neuron's
response std (multiply by `info["sessions"][s]["response_std"]` for the recorded units). Output nonlinearity:
ELU + 1 (neuralpredictors' FiringRateEncoder) or softplus.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from vislab.families.v1.cores import Core, build_core
from vislab.families.v1.readouts import FactorizedReadout, GaussianReadout, Readout
from vislab.models.registry import register_builder

Output = Literal["elu1", "softplus"]


def output_nonlinearity(x: torch.Tensor, kind: Output) -> torch.Tensor:
    return F.elu(x) + 1 if kind == "elu1" else F.softplus(x)


def inverse_output(rate: torch.Tensor, kind: Output) -> torch.Tensor:
    """The pre-activation giving `rate` (used to start every neuron's bias at its mean response)."""
    rate = rate.clamp(min=1e-3)
    if kind == "elu1":
        return torch.where(rate >= 1, rate - 1, torch.log(rate))  # elu(x) + 1 = exp(x) for x < 0
    return rate + torch.log(-torch.expm1(-rate))  # log(exp(r) - 1), stable


class Encoder(nn.Module):
    def __init__(self, core: Core, readouts: dict[str, Readout], image_shapes: dict[str, tuple[int, int, int]],
                 output: Output = "elu1"):
        super().__init__()
        self.core = core
        self.readouts = nn.ModuleDict(readouts)
        self.image_shapes = {k: tuple(v) for k, v in image_shapes.items()}
        self.output = output

    @property
    def sessions(self) -> list[str]:
        return list(self.readouts.keys())

    def readout_of(self, session: str) -> Readout:
        return cast(Readout, self.readouts[session])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.core(images)

    def readout(self, features: torch.Tensor, session: str) -> torch.Tensor:
        return output_nonlinearity(self.readouts[session](features), self.output)

    def forward(self, images: torch.Tensor, session: str | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, neurons of `session`); without a session: every session's neurons, in order."""
        feats = self.core(images)
        if session is not None:
            return self.readout(feats, session)
        return torch.cat([self.readout(feats, s) for s in self.sessions], dim=1)

    def regularizer(self, core_weight: float = 1.0) -> torch.Tensor:
        """`core_weight` x the core's penalty plus every readout's penalty."""
        reg = core_weight * self.core.regularizer()
        for s in self.sessions:
            reg = reg + self.readout_of(s).regularizer()
        return reg

    def constrain(self) -> None:
        for s in self.sessions:
            self.readout_of(s).constrain()

    @torch.no_grad()
    def feature_shape(self, session: str) -> tuple[int, int, int]:
        return self.readout_of(session).in_shape

    @torch.no_grad()
    def rf_positions(self, session: str) -> torch.Tensor:
        """(neurons, 2) readout positions mapped to image pixels (x = column, y = row)."""
        _, h, w = self.image_shapes[session]
        _, fh, fw = self.feature_shape(session)
        xy = self.readout_of(session).positions().float().cpu()
        return self.core.feature_to_pixel(xy, (h, w), (fh, fw))

    def initialize_bias(self, session: str, mean_rate: torch.Tensor) -> None:
        self.readout_of(session).initialize_bias(inverse_output(mean_rate, self.output))


def _feature_shape(core: nn.Module, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    was_training = core.training
    core.eval()
    with torch.no_grad():
        out = core(torch.zeros(1, *image_shape))
    core.train(was_training)
    if out.shape[-1] < 1 or out.shape[-2] < 1:
        raise ValueError(f"the core maps {image_shape} images to an empty feature map")
    return int(out.shape[1]), int(out.shape[2]), int(out.shape[3])


@register_builder("v1_encoder", lambda: (
    {"core": {"kind": "stacked", "channels": 8, "layers": 2, "input_kernel": 5},
     "readout": {"kind": "gaussian"}, "sessions": {"s1": {"num_neurons": 5, "image_shape": [1, 18, 32]}}},
    (torch.randn(2, 1, 18, 32, generator=torch.Generator().manual_seed(0)), "s1")))
def build_encoder(core: dict[str, Any], readout: dict[str, Any], sessions: dict[str, dict[str, Any]],
                  output: Output = "elu1") -> Encoder:
    """Rebuild an Encoder from plain data (the `spec.kwargs` of an export).

    core: {"kind": "stacked"|"pretrained", ...core kwargs}; readout: {"kind": "gaussian"|"factorized", ...};
    sessions: {session: {"num_neurons": N, "image_shape": [C, H, W], "coordinates_dim": 0|2}}.
    """
    shapes = {s: tuple(int(v) for v in info["image_shape"]) for s, info in sessions.items()}
    channels = {sh[0] for sh in shapes.values()}
    if len(channels) != 1:
        raise ValueError(f"sessions have images with different channel counts {sorted(channels)}: one core cannot read them")
    core_kwargs = dict(core)
    built_core = build_core(core_kwargs.pop("kind"), in_channels=channels.pop(), **core_kwargs)
    readout_kwargs = dict(readout)
    kind = readout_kwargs.pop("kind")
    readouts: dict[str, Readout] = {}
    feature_shapes: dict[tuple[int, ...], tuple[int, int, int]] = {}
    for s, info in sessions.items():
        if shapes[s] not in feature_shapes:
            feature_shapes[shapes[s]] = _feature_shape(built_core, shapes[s])  # type: ignore[arg-type]
        in_shape = feature_shapes[shapes[s]]
        n = int(info["num_neurons"])
        if kind == "factorized":
            readouts[s] = FactorizedReadout(in_shape, n, gamma=readout_kwargs.get("gamma", 0.0))
        else:
            readouts[s] = GaussianReadout(in_shape, n, coordinates_dim=int(info.get("coordinates_dim", 0)), **readout_kwargs)
    return Encoder(built_core, readouts, shapes, output)  # type: ignore[arg-type]
