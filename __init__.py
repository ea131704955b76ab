"""vislab: one training pipeline for CNN experiments in vision and computational neuroscience.

    from vislab import load_exported
    model, info = load_exported("exports/my-run")     # any family's export: no Lightning, no pickle
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_exported(directory: str | Path, map_location: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(network in eval mode, model.json) of any vislab export, whichever family's builder it names."""
    # torch and every family's networks: imported on first use, so that `import vislab.<anything>` stays light
    from vislab.models import exported
    from vislab.train.families import load_all_builders

    load_all_builders()
    return exported.load_exported(directory, map_location)
