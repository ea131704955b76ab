"""Readouts: per neuron, *where* in the core's feature map its receptive field is and *what* features it reads.

- `FactorizedReadout` (Klindt et al. 2017, "what x where"): a non-negative spatial mask (H', W') times a
  non-negative feature vector (C,) per neuron, L1 penalty on their outer product, i.e. |mask|_1 * |features|_1.
  Parameters grow with neurons x H' x W' (the mask), which is why large recordings need:
- `GaussianReadout` (Lurz et al. 2021, neuralpredictors' FullGaussian2d): a learned 2-D position per neuron
  at which the feature map is read with bilinear `grid_sample`; during training the position is sampled from a
  Gaussian around the mean (full / uncorrelated / isotropic covariance), in eval the mean is used. L1 penalty
  on the features. Optionally the positions are predicted from the neurons' cortical coordinates by a small
  MLP (the 'cortex' grid-mean predictor of Lurz et al.; retinotopy makes the map smooth).

Both: bias initialised from each neuron's mean response (`initialize_bias`), `regularizer()`, `constrain()`
(projection after an optimizer step) and `positions()` in feature-map pixels (x = column, y = row).
Shapes: (B, C, H', W') -> (B, neurons), before the output nonlinearity.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

GaussType = Literal["full", "uncorrelated", "isotropic"]


class FactorizedReadout(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], num_neurons: int, gamma: float = 0.0):
        super().__init__()
        c, h, w = in_shape
        self.in_shape = (c, h, w)
        self.gamma = gamma
        # positive at init (the constraint projects onto >= 0); masks roughly uniform, summing to ~1
        self.mask = nn.Parameter(torch.empty(num_neurons, h, w).uniform_(0.5, 1.5) / (h * w))
        self.features = nn.Parameter(torch.empty(num_neurons, c).uniform_(0.5, 1.5) / c)
        self.bias = nn.Parameter(torch.zeros(num_neurons))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # (B*C, H*W) @ (H*W, N): one GEMM; memory (B, C, N) instead of (B, N, C, H, W)
        pooled = (x.reshape(b * c, h * w) @ self.mask.reshape(len(self.mask), h * w).t()).view(b, c, -1)
        return torch.einsum("bcn,nc->bn", pooled, self.features) + self.bias

    def regularizer(self) -> torch.Tensor:
        # L1 of the outer product mask_n (x) features_n = |mask_n|_1 * |features_n|_1, summed over neurons
        return self.gamma * (self.mask.abs().sum(dim=(1, 2)) * self.features.abs().sum(dim=1)).sum()

    @torch.no_grad()
    def constrain(self) -> None:
        self.mask.clamp_(min=0)
        self.features.clamp_(min=0)

    @torch.no_grad()
    def positions(self) -> torch.Tensor:
        """(neurons, 2) centre of mass of each mask (x, y) in feature pixels."""
        m = self.mask.clamp(min=0)
        total = m.sum(dim=(1, 2)).clamp(min=1e-12)
        ys = torch.arange(m.shape[1], dtype=m.dtype)
        xs = torch.arange(m.shape[2], dtype=m.dtype)
        return torch.stack([(m.sum(1) * xs).sum(1) / total, (m.sum(2) * ys).sum(1) / total], dim=1)

    def spatial_maps(self) -> torch.Tensor:
        return self.mask.detach().clamp(min=0)  # (N, H', W')

    def initialize_bias(self, bias: torch.Tensor) -> None:
        self.bias.data.copy_(bias)


class GaussianReadout(nn.Module):
    coordinates: torch.Tensor
    mu: nn.Parameter | None

    def __init__(self, in_shape: tuple[int, int, int], num_neurons: int, gamma: float = 0.0,
                 gauss_type: GaussType = "full", init_mu_range: float = 0.3, init_sigma: float = 0.1,
                 coordinates_dim: int = 0, predictor_hidden_layers: int = 1, predictor_hidden_features: int = 30):
        super().__init__()
        if not 0 < init_mu_range <= 1 or init_sigma <= 0:
            raise ValueError(f"init_mu_range must be in (0, 1] and init_sigma > 0, got {init_mu_range}, {init_sigma}")
        c, h, w = in_shape
        self.in_shape = (c, h, w)
        self.gamma = gamma
        self.gauss_type = gauss_type
        n = num_neurons
        if coordinates_dim:
            # mean positions predicted from cortical coordinates (buffer: set by `set_coordinates`)
            self.register_buffer("coordinates", torch.zeros(n, coordinates_dim))
            layers: list[nn.Module] = []
            width = coordinates_dim
            for _ in range(predictor_hidden_layers):
                layers += [nn.Linear(width, predictor_hidden_features), nn.ELU()]
                width = predictor_hidden_features
            self.predictor: nn.Module | None = nn.Sequential(*layers, nn.Linear(width, 2), nn.Tanh())
            self.register_parameter("mu", None)
        else:
            self.predictor = None
            self.mu = nn.Parameter(torch.empty(n, 2).uniform_(-init_mu_range, init_mu_range))  # (x, y) in [-1, 1]
        if gauss_type == "full":
            # square root of the covariance, (N, 2, 2)
            self.sigma = nn.Parameter(torch.empty(n, 2, 2).uniform_(-init_sigma, init_sigma))
        else:
            self.sigma = nn.Parameter(torch.full((n, 2 if gauss_type == "uncorrelated" else 1), init_sigma))
        self.features = nn.Parameter(torch.full((c, n), 1.0 / c))
        self.bias = nn.Parameter(torch.zeros(n))

    def set_coordinates(self, coordinates: torch.Tensor) -> None:
        """Cortical coordinates (N, >= coordinates_dim), centred and scaled to [-1, 1] as in neuralpredictors."""
        xy = coordinates[:, : self.coordinates.shape[1]].to(self.coordinates)
        xy = xy - xy.mean(0, keepdim=True)
        self.coordinates.copy_(xy / xy.abs().max().clamp(min=1e-12))

    def mean_positions(self) -> torch.Tensor:
        """(N, 2) mean readout positions in grid_sample's [-1, 1] coordinates (x, y)."""
        if self.predictor is not None:
            return self.predictor(self.coordinates).clamp(-1, 1)
        assert self.mu is not None
        return self.mu.clamp(-1, 1)

    def sample_grid(self, batch_size: int, sample: bool) -> torch.Tensor:
        """(B, N, 1, 2) positions: around the mean in training (one draw per image and neuron), the mean in eval."""
        mu = self.mean_positions()
        grid = mu.unsqueeze(0).expand(batch_size, -1, -1)
        if sample:
            z = torch.randn(batch_size, *mu.shape, device=mu.device, dtype=mu.dtype)
            if self.gauss_type == "full":
                grid = grid + torch.einsum("ncd,bnd->bnc", self.sigma, z)
            else:
                grid = grid + z * self.sigma
        return grid.clamp(-1, 1).unsqueeze(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.sample_grid(x.shape[0], sample=self.training).to(x.dtype)
        sampled = F.grid_sample(x, grid, align_corners=True).squeeze(-1)  # (B, C, N)
        return torch.einsum("bcn,cn->bn", sampled, self.features) + self.bias

    def regularizer(self) -> torch.Tensor:
        return self.gamma * self.features.abs().sum()

    @torch.no_grad()
    def constrain(self) -> None:
        if self.mu is not None:
            self.mu.clamp_(-1, 1)
        if self.gauss_type != "full":
            self.sigma.clamp_(min=0)

    @torch.no_grad()
    def positions(self) -> torch.Tensor:
        """(N, 2) mean positions (x, y) in feature pixels (align_corners=True: -1 / +1 = first / last pixel)."""
        _, h, w = self.in_shape
        mu = self.mean_positions()
        return torch.stack([(mu[:, 0] + 1) / 2 * (w - 1), (mu[:, 1] + 1) / 2 * (h - 1)], dim=1)

    def initialize_bias(self, bias: torch.Tensor) -> None:
        self.bias.data.copy_(bias)


Readout = FactorizedReadout | GaussianReadout
