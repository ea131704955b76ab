"""The LightningModule of image synthesis: its only parameter is a batch of B independent images.

One training step = one optimiser iteration on the pixels (L-BFGS as in the papers, `max_iter=1` per step so
that its history carries over steps and Lightning sees every iteration; or Adam). The feature network is
frozen; the objective holds the targets. Images live in [0, 1] RGB (B, 3, H, W), or as luminance only
(B, 1, H, W) for colour-preserving style transfer (the network sees it as grey RGB).
"""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
from torch import nn

from vislab.families.textures.features import FeatureNet
from vislab.families.textures.losses import Objective


def seeded_noise(batch: int, channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """White noise in [0, 1]: (B, C, H, W), the same for a seed on every machine (the papers' start)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, height, width, generator=gen)


def spectrum_noise(source: torch.Tensor, seed: int) -> torch.Tensor:
    """Random-phase noise with the source's amplitude spectrum, one random phase shared by the channels (so
    colour cross-spectra are kept): (1, C, H, W) -> (1, C, H, W). From white noise, the Gram loss of the random
    multi-scale net is concave along the gradient (features must grow) and L-BFGS stalls; from here it converges."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.angle(torch.fft.rfft2(torch.rand(source.shape[-2:], generator=gen)))  # (H, W // 2 + 1)
    mean = source.mean((-2, -1), keepdim=True)
    spec = torch.fft.rfft2(source - mean) * torch.exp(1j * theta)
    return torch.fft.irfft2(spec, s=source.shape[-2:]) + mean


class PixelSynthesis(pl.LightningModule):
    def __init__(self, features: FeatureNet, objective: Objective, init: torch.Tensor, *,
                 optimizer: Literal["lbfgs", "adam"] = "lbfgs", lr: float = 1.0, history_size: int = 100,
                 line_search: Literal["none", "strong_wolfe"] = "none", log_every: int = 10):
        super().__init__()
        self.image = nn.Parameter(init.clone())  # (B, 3 or 1, H, W)
        self.features = features.requires_grad_(False)
        self.objective = objective
        self.optimizer_name = optimizer
        self.lr = lr
        self.history_size = history_size
        self.line_search = None if line_search == "none" else line_search
        self.log_every = log_every
        self.curve: list[tuple[int, list[float]]] = []
        """(step, per-image loss) every `log_every` steps: the loss curves."""
        self._last: torch.Tensor | None = None

    def render(self) -> torch.Tensor:
        """The network's input (B, 3, H, W): the RGB images, or the luminance as grey."""
        return self.image if self.image.shape[1] == 3 else self.image.expand(-1, 3, -1, -1)

    def per_image_terms(self) -> dict[str, torch.Tensor]:
        x = self.render()
        return self.objective(self.features(x), x)

    def training_step(self, batch: object, batch_idx: int) -> torch.Tensor:
        per_image = torch.stack(list(self.per_image_terms().values())).sum(0)  # (B,)
        self._last = per_image.detach()
        # Independent images: a sum, so gradients do not mix. Scaled by the pixel count per image because
        # L-BFGS keeps a curvature pair only if s.y > 1e-10 (absolute): relative losses are O(1) in total.
        return per_image.sum() * self.image[0].numel()

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        step = self.global_step
        if self._last is not None and (step % self.log_every == 0 or step == 1):
            self.curve.append((step, self._last.tolist()))
        if self.optimizer_name == "adam":
            with torch.no_grad():  # projected gradient descent on the valid pixel range
                self.image.clamp_(0, 1)

    def on_train_end(self) -> None:
        if self._last is not None and (not self.curve or self.curve[-1][0] != self.global_step):
            self.curve.append((self.global_step, self._last.tolist()))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "adam":
            return torch.optim.Adam([self.image], lr=self.lr)
        # one iteration per Lightning step; tolerances 0 so that a step is never skipped on a flat stretch
        return torch.optim.LBFGS([self.image], lr=self.lr, max_iter=1, history_size=self.history_size,
                                 line_search_fn=self.line_search, tolerance_grad=0.0, tolerance_change=0.0)

    def result(self) -> torch.Tensor:
        """The optimised images clamped to [0, 1], detached: (B, C, H, W)."""
        return self.image.detach().clamp(0, 1)
