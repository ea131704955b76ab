"""One way for every family to log a figure: to wandb, to TensorBoard, and as a PNG in the run directory.

    log_figure(self, "v1/filters", image, step=self.global_step)           # inside a LightningModule
    log_figure(trainer.loggers, "robustness/curve", fig, step, run_dir=out)  # anywhere else

`figure` is an (H, W, 3) uint8 array, a list of them (shown side by side on wandb, stacked in one image on
TensorBoard and in the PNG), a PIL image or a matplotlib figure (rendered off-screen, then closed). The PNG is
`<run_dir>/figures/<name with '/' as '_'>-step<N>.png`, so a run's pictures can be looked at without any
dashboard. Only rank 0 logs.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from vislab.core.dist import is_rank_zero

FIGURES_DIR = "figures"


def as_image(figure: Any) -> np.ndarray:
    """(H, W, 3) uint8 of an array (uint8, or float in [0, 1]; gray or RGBA allowed), PIL image or matplotlib figure."""
    if hasattr(figure, "savefig"):  # matplotlib: render through PNG, then free it
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=100)
        import matplotlib.pyplot as plt  # matplotlib: only when a figure is drawn

        plt.close(figure)
        figure = Image.open(io.BytesIO(buf.getvalue()))
    if isinstance(figure, Image.Image):
        return np.asarray(figure.convert("RGB"))
    a = np.asarray(figure)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0.0, 1.0) * 255).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    return a[..., :3]


def stack(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Images one under the other on a white background (widths may differ)."""
    width = max(i.shape[1] for i in images)
    rows = []
    for k, img in enumerate(images):
        row = np.full((img.shape[0] + (gap if k < len(images) - 1 else 0), width, 3), 255, np.uint8)
        row[:img.shape[0], :img.shape[1]] = img
        rows.append(row)
    return np.concatenate(rows, axis=0)


def figure_path(run_dir: str | Path, name: str, step: int) -> Path:
    return Path(run_dir) / FIGURES_DIR / f"{name.replace('/', '_')}-step{step:07d}.png"


def log_figure(target: Any, name: str, figure: Any, step: int, *, run_dir: str | Path | None = None,
               caption: str | list[str] | None = None) -> Path | None:
    """Send `figure` to every wandb and TensorBoard logger of `target` (a LightningModule or a list of
    loggers) and write it as a PNG under `run_dir` (default: the trainer's `default_root_dir`, the run
    directory). Returns the PNG's path (None on ranks other than 0)."""
    loggers, rank = (list(target), 0 if is_rank_zero() else 1) if isinstance(target, list | tuple) else \
        (list(target.loggers), target.global_rank)
    if rank != 0:
        return None
    if run_dir is None and not isinstance(target, list | tuple) and target._trainer is not None:
        run_dir = target.trainer.default_root_dir
    images = [as_image(f) for f in figure] if isinstance(figure, list) else [as_image(figure)]
    single = images[0] if len(images) == 1 else stack(images)
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            captions = [caption] * len(images) if isinstance(caption, str) else caption
            lg.log_image(key=name, images=images, step=step, **({"caption": captions} if captions else {}))
        elif isinstance(lg, TensorBoardLogger):
            lg.experiment.add_image(name, single, global_step=step, dataformats="HWC")
    if run_dir is None:
        return None
    path = figure_path(run_dir, name, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(single).save(path)
    return path
