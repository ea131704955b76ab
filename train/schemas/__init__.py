"""Per-family `model:` and `data:` schemas (light modules: no torch import)."""
