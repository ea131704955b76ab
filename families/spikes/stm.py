"""The spike-triggered mixture (STM) baseline of Theis et al. 2016 (Neuron), as a small torch module.

    rate(x) = sum_k exp( sum_m beta_km (u_m^T x)^2 + w_k^T x + b_k )

x is the window of calcium around a frame (the same window the CNN sees); the rate is the expected number
of spikes in that frame and is fit by maximising the Poisson likelihood of the observed counts (loss
`poisson` in the spikes family). Like the CNN it runs on windows or, with the projections as convolutions,
over a whole trace; `ensemble_size` members are stacked along the channel axis.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vislab.families.spikes.networks import NUM_CONDITIONS
from vislab.models.registry import register_builder

MAX_LOG_RATE = 12.0  # exp() overflows float32 past ~88; a frame never holds e^12 spikes


class STM(nn.Module):
    def __init__(self, window: int = 64, components: int = 4, features: int = 4, ensemble_size: int = 1,
                 conditioned: bool = True, base_rate: float = 0.05):
        super().__init__()
        e, k, m = ensemble_size, components, features
        self.ensemble_size, self.components, self.features = e, k, m
        self.conditioned = conditioned
        self.in_channels = 1 + (NUM_CONDITIONS if conditioned else 0)
        self.receptive_field = window
        self.centre = window // 2
        self.u = nn.Conv1d(self.in_channels, e * m, window, bias=False)  # quadratic features u_m
        self.w = nn.Conv1d(self.in_channels, e * k, window, bias=False)  # linear term w_k
        self.b = nn.Parameter(torch.full((e, k), math.log(base_rate / k)))  # b_k: start near a typical rate
        self.beta = nn.Parameter(torch.empty(e, k, m))
        scale = 0.3 / math.sqrt(self.in_channels * window)
        nn.init.normal_(self.u.weight, std=scale)
        nn.init.normal_(self.w.weight, std=scale)
        nn.init.normal_(self.beta, std=0.1)

    def forward_trace(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, ensemble_size, T - window + 1) non-negative rates (spikes per frame)."""
        b = x.shape[0]
        quad = self.u(x).view(b, self.ensemble_size, self.features, -1) ** 2  # (B, E, M, T')
        lin = self.w(x).view(b, self.ensemble_size, self.components, -1)  # (B, E, K, T')
        log_rate = torch.einsum("ekm,bemt->bekt", self.beta, quad) + lin + self.b[None, :, :, None]
        return torch.exp(torch.clamp(log_rate, max=MAX_LOG_RATE)).sum(dim=2)

    def forward_windows(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, window) -> (B, ensemble_size)."""
        return self.forward_trace(x).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_trace(x)


@register_builder("stm", lambda: (
    {"window": 16, "components": 2, "features": 2, "ensemble_size": 2, "conditioned": False},
    (torch.randn(2, 1, 48, generator=torch.Generator().manual_seed(0)),)))
def build_stm(window: int, components: int, features: int, ensemble_size: int, conditioned: bool) -> STM:
    """Builder named in exports' model.json."""
    return STM(window, components, features, ensemble_size, conditioned)

