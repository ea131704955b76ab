"""scikit-learn's handwritten digits (1,797 real 8x8 scans, 10 classes) as an ImageFolder tree.

The demo's embedded data set: it ships inside the scikit-learn wheel, so the demo needs no download.
The tree then goes through the same ImageFolder importer as any user's images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits_tree(out: Path, seed: int = 0, fractions: tuple[float, float] = (0.7, 0.15)) -> Path:
    """Write `out/{train,val,test}/<digit>/<index>.png` with a stratified split; returns `out`."""
    from sklearn.datasets import load_digits  # scikit-learn: slow to import, only for the embedded data

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 counts -> 8-bit grey
    rng = np.random.default_rng(seed)
    for label in range(10):
        idx = rng.permutation(np.flatnonzero(digits.target == label))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        parts = {"train": idx[:n_train], "val": idx[n_train:n_train + n_val], "test": idx[n_train + n_val:]}
        for split, ids in parts.items():
            d = out / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            for i in ids:
                Image.fromarray(images[i]).save(d / f"digit{i:04d}.png")
    return out
