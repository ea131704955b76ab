"""Figures of a synthesis run: source | result side by side, loss curves, and a contact sheet of a shard set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_pil(image: torch.Tensor) -> Image.Image:
    """(1 or no batch, 3, H, W) in [0, 1] -> RGB PIL image."""
    x = image.detach().float().clamp(0, 1).squeeze(0).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((x * 255 + 0.5).astype(np.uint8))


def side_by_side(images: list[torch.Tensor], height: int = 256, gap: int = 8) -> Image.Image:
    """Images scaled to one height, left to right on white."""
    tiles = [to_pil(im) for im in images]
    tiles = [t.resize((max(1, round(t.width * height / t.height)), height), Image.Resampling.LANCZOS) for t in tiles]
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), height), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width + gap
    return sheet


def contact_sheet(rows: list[list[Path]], height: int = 128, gap: int = 6) -> Image.Image:
    """One row per source: the PNGs of its row (source, results) scaled to `height`."""
    lines = []
    for row in rows:
        tiles = [Image.open(p).convert("RGB") for p in row]
        tiles = [t.resize((max(1, round(t.width * height / t.height)), height), Image.Resampling.LANCZOS) for t in tiles]
        line = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), height), "white")
        x = 0
        for t in tiles:
            line.paste(t, (x, 0))
            x += t.width + gap
        lines.append(line)
    sheet = Image.new("RGB", (max(line.width for line in lines), len(lines) * (height + gap) - gap), "white")
    for i, line in enumerate(lines):
        sheet.paste(line, (0, i * (height + gap)))
    return sheet


def loss_curve(curve: list[tuple[int, float]], path: Path, title: str) -> None:
    import matplotlib  # slow import, figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: only when a figure is drawn

    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    steps, values = zip(*curve, strict=True) if curve else ((), ())
    ax.semilogy(steps, values)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
