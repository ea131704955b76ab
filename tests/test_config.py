"""Configuration: typed schema, errors that name the key (and the closest valid one), exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

from vislab.core.errors import ConfigError
from vislab.data.manifest import Manifest
from vislab.train.cli import main
from vislab.train.config import load_config

DIGITS_CFG = REPO / "configs" / "classify" / "digits.yaml"


def _errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_valid_config_resolves_with_derived_values(digits_root: Path) -> None:
    cfg = load_config(DIGITS_CFG, [f"data.root={digits_root}", "trainer.devices=2", "data.batch_size=64"])
    assert cfg.model.name == "small_cnn" and cfg.data.grayscale is True
    assert cfg.per_rank_batch_size() == 32 and cfg.world_size == 2


def test_unknown_key_names_key_and_closest(capsys: pytest.CaptureFixture[str], digits_root: Path) -> None:
    code, err = _errors(capsys, ["config", "show", str(DIGITS_CFG), f"data.root={digits_root}", "optim.lrr=0.1"])
    assert code == 2
    assert "unknown key 'optim.lrr'" in err and "did you mean 'optim.lr'" in err


def test_wrong_type_names_key(capsys: pytest.CaptureFixture[str], digits_root: Path) -> None:
    code, err = _errors(capsys, ["config", "show", str(DIGITS_CFG), f"data.root={digits_root}", "trainer.max_epochs=ten"])
    assert code == 2 and "'trainer.max_epochs'" in err


def test_bad_architecture_suggests_closest(capsys: pytest.CaptureFixture[str], digits_root: Path) -> None:
    code, err = _errors(capsys, ["fit", str(DIGITS_CFG), f"data.root={digits_root}", "model.name=resnet5O"])
    assert code == 2 and "unknown architecture 'resnet5O'" in err and "'resnet50'" in err


def test_all_problems_reported_at_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _errors(capsys, ["fit", str(DIGITS_CFG), f"data.root={tmp_path / 'nope'}", "model.name=vgg1",
                                 "data.batch_size=63"])
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("vislab: error:")]
    assert any("data.root" in ln and "does not exist" in ln for ln in lines)
    assert any("unknown architecture 'vgg1'" in ln for ln in lines)
    assert any("'data.batch_size'=63" in ln for ln in lines)


def test_missing_shard_named_before_training(capsys: pytest.CaptureFixture[str], digits_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(digits_root, root)
    victim = sorted((root / "train").glob("*.tar"))[0]
    victim.unlink()
    code, err = _errors(capsys, ["fit", str(DIGITS_CFG), f"data.root={root}"])
    assert code == 2 and str(victim) in err and "missing" in err


def test_unknown_task(tmp_path: Path) -> None:
    cfg = tmp_path / "x.yaml"
    cfg.write_text("task: clasify\n")
    with pytest.raises(ConfigError, match="did you mean 'classify'"):
        load_config(cfg)


def test_config_show_prints_resolved_yaml(capsys: pytest.CaptureFixture[str], digits_root: Path) -> None:
    assert main(["config", "show", str(DIGITS_CFG), f"data.root={digits_root}", "seed=7"]) == 0
    out = capsys.readouterr().out
    assert "seed: 7" in out and "name: small_cnn" in out and '"per_rank_batch_size": 32' in out


def _stub_root(tmp_path: Path) -> Path:
    """A data root whose splits have (empty) manifests: enough for config checks of any family."""
    for split in ("train", "val", "test"):
        (tmp_path / split).mkdir(parents=True)
        Manifest(num_samples=0, shards=[], schema={}).save(tmp_path / split)
    return tmp_path


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_validates(path: Path, tmp_path: Path) -> None:
    """Schema and family checks pass for every config (its data.root replaced by a stub root)."""
    cfg = load_config(path, check=False)  # schema: unknown keys, types, missing values
    root = _stub_root(tmp_path / "root")
    try:
        load_config(path, [f"data.root={root}"])
    except ConfigError as e:  # only data-content complaints are acceptable against an empty stub
        real = [p for p in e.problems if str(root) not in p and "data.root" not in p]
        assert not real, "\n".join(real)
    assert json.dumps(cfg.derived())
