"""Start readouts at data-driven receptive-field estimates (cf. the 'sta' mask init of Klindt et al. 2017).

Finding each neuron's receptive-field location is the hard part of fitting these models (Klindt et al. 2017):
a readout placed far from its neuron's RF gets no gradient towards it. Before training, the responses are
correlated with the images' local contrast energy, pixel by pixel; both simple cells (rectified) and complex
cells (phase-invariant) respond to contrast at their RF, so the peak of each neuron's correlation map is a
cheap RF-centre estimate. The Gaussian readout starts at the peak; the factorized readout's mask starts as
the sharpened positive part of the map (plus a small floor), as in the original 'sta' init.

All statistics are sums over trials, so any number of trials is streamed batch by batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from vislab.families.v1.encoder import Encoder
from vislab.families.v1.readouts import FactorizedReadout, GaussianReadout


def contrast_energy(images: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """(T, C, H, W) -> (T, H, W): squared band-pass image, pooled over a Gaussian neighbourhood."""
    k = 2 * round(3 * sigma) + 1
    band = images - gaussian_blur(images, [k, k], [sigma, sigma])
    return gaussian_blur(band.pow(2).sum(1, keepdim=True), [k, k], [sigma, sigma]).squeeze(1)


class EnergyCorrelation:
    """Running sums for the correlation of every neuron's response with the contrast energy at every pixel."""

    def __init__(self) -> None:
        self.n = 0
        self.sums: dict[str, torch.Tensor] = {}

    def update(self, images: torch.Tensor, responses: torch.Tensor) -> None:
        e = contrast_energy(images.double()).flatten(1)  # (T, H*W)
        r = responses.double()  # (T, N)
        self.shape = images.shape[-2:]
        parts = {"e": e.sum(0), "ee": (e * e).sum(0), "r": r.sum(0), "rr": (r * r).sum(0), "re": r.t() @ e}
        for k, v in parts.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.n += len(r)

    def maps(self) -> torch.Tensor:
        """(N, H, W) correlation maps."""
        s, n = self.sums, max(self.n, 1)
        cov = s["re"] / n - torch.outer(s["r"] / n, s["e"] / n)
        sd_e = (s["ee"] / n - (s["e"] / n) ** 2).clamp(min=0).sqrt()
        sd_r = (s["rr"] / n - (s["r"] / n) ** 2).clamp(min=0).sqrt()
        return (cov / (torch.outer(sd_r, sd_e) + 1e-12)).view(-1, *self.shape).float()


def peak_positions(maps: torch.Tensor, window: int = 2) -> torch.Tensor:
    """(N, H, W) -> (N, 2) sub-pixel peak (x, y): centroid of the positive map in a window around the max."""
    n, h, w = maps.shape
    flat = maps.flatten(1).argmax(1)
    py, px = flat // w, flat % w
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    near = ((ys - py.view(n, 1, 1)).abs() <= window) & ((xs - px.view(n, 1, 1)).abs() <= window)
    weight = maps.clamp(min=0) * near
    total = weight.sum(dim=(1, 2)).clamp(min=1e-12)
    return torch.stack([(weight * xs).sum(dim=(1, 2)) / total, (weight * ys).sum(dim=(1, 2)) / total], dim=1)


@torch.no_grad()
def initialize_readout(model: Encoder, session: str, maps: torch.Tensor, sharpen: float = 4.0) -> None:
    """Move a session's readout to its correlation-map estimates (maps: (N, H, W) in image pixels)."""
    readout = model.readouts[session]
    _, fh, fw = model.feature_shape(session)
    image_hw = (int(maps.shape[-2]), int(maps.shape[-1]))
    if isinstance(readout, GaussianReadout):
        if readout.mu is None:  # positions come from the cortex predictor
            return
        xy = model.core.pixel_to_feature(peak_positions(maps), image_hw, (fh, fw))
        readout.mu.copy_(torch.stack([xy[:, 0] / max(fw - 1, 1), xy[:, 1] / max(fh - 1, 1)], dim=1) * 2 - 1)
        readout.mu.clamp_(-1, 1)
    elif isinstance(readout, FactorizedReadout):
        # sample the image-pixel maps at the feature pixels' centres, sharpen, normalise to sum 1
        ys = model.core.feature_to_pixel(torch.stack([torch.zeros(fh), torch.arange(fh, dtype=torch.float32)], 1), image_hw, (fh, fw))[:, 1]
        xs = model.core.feature_to_pixel(torch.stack([torch.arange(fw, dtype=torch.float32), torch.zeros(fw)], 1), image_hw, (fh, fw))[:, 0]
        gy = ys / max(image_hw[0] - 1, 1) * 2 - 1
        gx = xs / max(image_hw[1] - 1, 1) * 2 - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).unsqueeze(0).expand(len(maps), -1, -1, -1)
        sampled = F.grid_sample(maps.unsqueeze(1), grid, align_corners=True).squeeze(1).clamp(min=0)
        peak = sampled.flatten(1).max(1).values.clamp(min=1e-12).view(-1, 1, 1)
        mask = (sampled / peak) ** sharpen + 0.01
        readout.mask.copy_(mask / mask.sum(dim=(1, 2), keepdim=True))
