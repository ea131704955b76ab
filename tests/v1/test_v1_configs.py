"""Every V1 config validates against the schema and its checks, on shards made here."""

from __future__ import annotations

from pathlib import Path

import pytest

from vislab.core.errors import ConfigError
from vislab.families.v1.importers.static_v1 import run as import_static
from vislab.families.v1.simulate import SimulationConfig, simulate
from vislab.train.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "v1").glob("*.yaml"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("v1cfg")
    simulate(base / "src", SimulationConfig(sessions=1, neurons=4, train=12, validation=4, test_images=2, repeats=2))
    import_static(base / "src", base / "shards", workers=1, log=lambda s: None)
    return base / "shards"


def test_the_three_configs_exist() -> None:
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "klindt2017.yaml", "gaussian.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path: Path, root: Path) -> None:
    cfg = load_config(path, [f"data.root={root}"])
    assert cfg.task == "v1" and cfg.optim.name == "adam"


def test_klindt2017_config_is_the_paper_model(root: Path) -> None:
    m = load_config(CONFIGS[0].parent / "klindt2017.yaml", [f"data.root={root}"]).model
    assert (m.layers, m.channels, m.input_kernel, m.hidden_kernel, m.core_activation, m.readout) == \
        (3, 48, 13, 3, "softplus", "factorized")


def test_bad_values_are_reported(root: Path, digits_root: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS[0].parent / "gaussian.yaml", [f"data.root={root}", "model.input_kernel=99",
                                                          "model.readout=gausian"])
    assert any("model.readout" in p for p in e.value.problems)
    with pytest.raises(ConfigError, match="smaller than model.input_kernel"):
        load_config(CONFIGS[0].parent / "gaussian.yaml", [f"data.root={root}", "model.input_kernel=99"])
    with pytest.raises(ConfigError, match="holds no neural recordings"):
        load_config(CONFIGS[0].parent / "gaussian.yaml", [f"data.root={digits_root}"])
