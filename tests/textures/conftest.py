"""Real photos that ship with scikit-learn (china.jpg, flower.jpg), written as files for the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("photos")
    found = {}
    data = load_sample_images()
    for name, array in zip(data.filenames, data.images, strict=True):
        stem = Path(name).stem
        Image.fromarray(np.asarray(array)).save(out / f"{stem}.jpg")
        found[stem] = out / f"{stem}.jpg"
    return found
