"""One package per model family; each exposes `FAMILY` (a `vislab.models.family.Family`). A family imports
`models/`, `data/` and `core/`, never another family or `train/`. The list of families is
`vislab.train.families.FAMILIES`."""
