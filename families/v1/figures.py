"""Pictures of a V1 model for the dashboard: first-layer filters, readout positions, factorized masks.

Each function returns an (H, W, 3) uint8 array (what `WandbLogger.log_image` takes). matplotlib's Agg
backend renders the position scatter off-screen (Slurm nodes have no display).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid


def _to_uint8(grid: torch.Tensor) -> np.ndarray:
    return (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def filter_grid(weight: torch.Tensor, upscale: int = 4) -> np.ndarray:
    """First-layer filters (out, in, k, k): each input channel's kernel scaled to [-max|w|, max|w|] -> [0, 1]."""
    w = weight.detach().float().cpu()
    w = w[:, :1] if w.shape[1] not in (1, 3) else w
    scale = w.abs().flatten(1).max(1).values.clamp(min=1e-12).view(-1, 1, 1, 1)
    tiles = 0.5 + 0.5 * w / scale
    tiles = torch.nn.functional.interpolate(tiles, scale_factor=upscale, mode="nearest")
    return _to_uint8(make_grid(tiles, nrow=int(np.ceil(np.sqrt(len(w)))), padding=2, pad_value=1.0))


def mask_grid(masks: torch.Tensor, count: int = 32, upscale: int = 4) -> np.ndarray:
    """The first `count` spatial masks (N, H, W) of a factorized readout, each scaled to its own maximum."""
    m = masks[:count].detach().float().cpu().unsqueeze(1)
    m = m / m.flatten(1).max(1).values.clamp(min=1e-12).view(-1, 1, 1, 1)
    m = torch.nn.functional.interpolate(m, scale_factor=upscale, mode="nearest")
    return _to_uint8(make_grid(m, nrow=8, padding=2, pad_value=1.0))


def position_scatter(positions: dict[str, np.ndarray], image_hw: tuple[int, int],
                     truth: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Readout positions (x, y) in image pixels of every session, drawn over the image frame."""
    import matplotlib  # matplotlib: only when a figure is drawn

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # matplotlib: only when a figure is drawn

    h, w = image_hw
    fig, ax = plt.subplots(figsize=(6, 6 * h / w + 0.6), dpi=100)
    for name, xy in positions.items():
        ax.scatter(xy[:, 0], xy[:, 1], s=8, label=name)
        if truth and name in truth:
            t = truth[name]
            ax.plot(np.stack([xy[:, 0], t[:, 0]]), np.stack([xy[:, 1], t[:, 1]]), color="0.6", linewidth=0.5)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)  # image rows grow downwards
    ax.set_aspect("equal")
    ax.set_title("readout positions (image pixels)")
    if len(positions) <= 8:
        ax.legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)

    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
