"""The CASCADE-like spike-inference CNN (Rupprecht et al. 2021), as one set of weights with two executions.

Window mode (`forward_windows`, CASCADE's `define_model`): a 64-frame window of dF/F -> conv 31 -> conv 19 ->
max-pool 2 -> conv 5 -> max-pool 2 -> a small dense layer per position -> one number, the spike rate at the
window's centre frame (frame 32, CASCADE's `before_frac = 0.5`).

Trace mode (`forward_trace`): the same weights run fully convolutionally over a whole trace, with the pools
at stride 1 and every later layer dilated by the pooling factor so far (the "a trous" / shift-and-stitch
identity). Output i equals the window model on frames [i, i + 64): identical numbers, but each layer is
computed once per frame instead of once per window, about 12x fewer operations.

Ensembles: `ensemble_size` members are stored as grouped convolutions (member g owns group g of every
layer, each initialised from its own random draw), so one forward pass evaluates all of them; inference
averages the members (CASCADE averages 5 models per noise level).

Optional conditioning: the recording's noise level nu and frame rate enter as two constant input channels
(log nu, log(recording rate / model rate)), so one network serves every noise level and rate it was
trained on instead of CASCADE's one model per noise level.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vislab.models.registry import register_builder

NUM_CONDITIONS = 2  # log noise level, log(frame rate / model rate)


def receptive_field(kernel_sizes: list[int]) -> int:
    """Window length the CNN sees: conv k1, conv k2, pool 2 (x2 dilation), conv k3, pool 2 (x4), head 2."""
    k1, k2, k3 = kernel_sizes
    return 1 + (k1 - 1) + (k2 - 1) + 1 + 2 * (k3 - 1) + 2 + 4


def conditions(noise_level: torch.Tensor, frame_rate: torch.Tensor, model_rate: float) -> torch.Tensor:
    """(B,) noise levels (%) and (B,) recording frame rates (Hz) -> (B, 2) conditioning inputs."""
    nu = torch.clamp(noise_level, min=0.05)
    return torch.stack([torch.log(nu), torch.log(frame_rate / model_rate)], dim=-1).float()


def net_input(trace: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """(B, T) dF/F and optional (B, 2) conditions -> (B, C, T) network input."""
    x = trace.unsqueeze(1)
    if cond is None:
        return x
    return torch.cat([x, cond.to(x.dtype).unsqueeze(-1).expand(-1, -1, x.shape[-1])], dim=1)


class SpikeCNN(nn.Module):
    """CASCADE's architecture; `ensemble_size` independent members evaluated in one grouped pass."""

    def __init__(self, filters: list[int] | None = None, kernel_sizes: list[int] | None = None, dense: int = 30,
                 ensemble_size: int = 1, conditioned: bool = True, output: Literal["linear", "softplus"] = "linear"):
        super().__init__()
        c1, c2, c3 = filters or [30, 40, 50]
        k1, k2, k3 = kernel_sizes or [31, 19, 5]
        e = ensemble_size
        self.ensemble_size = e
        self.conditioned = conditioned
        self.in_channels = 1 + (NUM_CONDITIONS if conditioned else 0)
        self.receptive_field = receptive_field([k1, k2, k3])
        self.centre = self.receptive_field // 2  # output i is the rate at input frame i + centre
        self.output = output
        # member g = output channels [g*c, (g+1)*c) of every layer; the first layer reads the shared input
        self.conv1 = nn.Conv1d(self.in_channels, e * c1, k1)
        self.conv2 = nn.Conv1d(e * c1, e * c2, k2, groups=e)
        self.conv3 = nn.Conv1d(e * c2, e * c3, k3, groups=e)
        self.dense = nn.Conv1d(e * c3, e * dense, 1, groups=e)  # CASCADE's Dense applied per position
        self.head = nn.Conv1d(e * dense, e, 2, groups=e)  # Flatten(2 positions x dense) -> Dense(1)

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        return F.softplus(out) if self.output == "softplus" else out

    def forward_windows(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, receptive_field) windows -> (B, ensemble_size) rates at the window centres."""
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        h = F.relu(self.conv3(F.max_pool1d(h, 2)))
        h = F.relu(self.dense(F.max_pool1d(h, 2)))  # (B, E*dense, 2)
        return self._finish(self.head(h)).squeeze(-1)

    def forward_trace(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) traces -> (B, ensemble_size, T - receptive_field + 1): output i = window [i, i + RF)."""
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        h = F.max_pool1d(h, 2, stride=1)
        h = F.relu(F.conv1d(h, self.conv3.weight, self.conv3.bias, dilation=2, groups=self.ensemble_size))
        h = F.max_pool1d(h, 2, stride=1, dilation=2)
        h = F.relu(self.dense(h))
        out = F.conv1d(h, self.head.weight, self.head.bias, dilation=4, groups=self.ensemble_size)
        return self._finish(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Trace mode (what export and inference use): (B, C, T) -> (B, E, T - RF + 1)."""
        return self.forward_trace(x)


@register_builder("spike_cnn", lambda: (
    {"filters": [4, 4, 4], "kernel_sizes": [31, 19, 5], "dense": 8, "ensemble_size": 2, "conditioned": True,
     "output": "softplus"}, (torch.randn(2, 1 + NUM_CONDITIONS, 96, generator=torch.Generator().manual_seed(0)),)))
def build_spike_cnn(filters: list[int], kernel_sizes: list[int], dense: int, ensemble_size: int,
                    conditioned: bool, output: Literal["linear", "softplus"]) -> SpikeCNN:
    """Builder named in exports' model.json (rebuilds the network without Lightning)."""
    return SpikeCNN(filters, kernel_sizes, dense, ensemble_size, conditioned, output)


def windows_of(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, T) -> (B * (T - size + 1), C, size): every window, for the window-mode execution."""
    b, c, t = x.shape
    w = x.unfold(-1, size, 1)  # (B, C, T - size + 1, size)
    return w.permute(0, 2, 1, 3).reshape(b * (t - size + 1), c, size)
