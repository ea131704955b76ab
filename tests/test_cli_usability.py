"""Small frictions a new user meets: --version, the help, `config keys`, configs by name after a plain
install, `vislab test RUN_DIR`, and an export's model.json naming only files it wrote."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import REPO

from vislab.core.config import RunConfig, find_config
from vislab.core.config_docs import describe_keys
from vislab.train import families
from vislab.train.cli import main
from vislab.train.config import load_config


@pytest.fixture(scope="module")
def tiny_run(digits_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vislab.train.run import fit  # Lightning: only the tests that train

    runs = tmp_path_factory.mktemp("runs")
    return fit(load_config("classify/digits", [f"data.root={digits_root}", f"runs_root={runs}", "trainer.devices=1",
                                               "trainer.max_epochs=1", "data.num_workers=0", "logger.wandb=false",
                                               "logger.tensorboard=false", "trainer.progress_bar=none",
                                               "model.name=tiny_cnn"]))


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert re.fullmatch(r"vislab \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "vislab models" in out and "vislab config keys" in out and "vislab --version" in out


def test_config_keys_lists_every_key_with_type_default_and_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    keys = {k.key: k for k in describe_keys(RunConfig)}
    assert keys["optim.lr"].type == "float" and keys["optim.lr"].default == 0.1
    assert keys["optim.lr"].doc.startswith("Peak learning rate")
    assert keys["data.root"].doc and keys["logger.fallback_offline"].default is False
    # a family's schema: its own data fields and model group, inherited field docstrings kept
    transfer = {k.key: k for k in describe_keys(families.get_family("transfer").schema)}
    assert transfer["model.backbone.name"].doc and transfer["data.batch_size"].doc.startswith("Global batch size")
    assert main(["config", "keys", "v1"]) == 0
    out = capsys.readouterr().out
    assert "data.batch_size: int = " in out and "\n    Global batch size per optimizer step" in out
    assert main(["config", "keys", "nosuch"]) == 2


def test_shipped_configs_by_name_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here: the name resolves to the package data
    assert find_config("classify/digits") == find_config("classify/digits.yaml") == REPO / "configs/classify/digits.yaml"
    cfg = load_config("v1/demo", ["data.root=x"], check=False)
    assert cfg.task == "v1"
    assert find_config("classify/nosuch") == Path("classify/nosuch")  # a missing file stays a missing file


def test_a_plain_install_ships_every_package_and_config_folder() -> None:
    """pyproject lists packages by hand (the repo root is the package): a folder left out is missing after a
    non-editable `pip install` (the Docker image), though everything works in the editable checkout."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    code = {".".join(("vislab", *p.parent.relative_to(REPO).parts)) for p in REPO.glob("**/__init__.py")
            if not {".venv", "tests", "build"} & set(p.relative_to(REPO).parts)}
    configs = {".".join(("vislab", *p.parent.relative_to(REPO).parts)) for p in (REPO / "configs").glob("*/*.yaml")}
    assert code | configs <= listed, sorted((code | configs) - listed)


def test_test_verb_takes_a_run_directory(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert main(["test", str(tiny_run), "data.num_workers=0"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["test/acc1"] == pytest.approx(summary["test_metrics"]["test/acc1"])


def test_export_without_a_weights_format_names_no_weights_file(tiny_run: Path, tmp_path: Path) -> None:
    from vislab.models.exported import load_exported
    from vislab.train.export import export_run  # torch, onnx: only the tests that export

    out = export_run(tiny_run, tmp_path / "e", ["onnx", "torchscript"])
    info = json.loads((out / "model.json").read_text())
    assert info["weights"] is None and all((out / name).is_file() for name in info["files"].values())
    with pytest.raises(FileNotFoundError, match="this export has: onnx, torchscript"):
        load_exported(out)
    info = json.loads((export_run(tiny_run, tmp_path / "s", ["state_dict"]) / "model.json").read_text())
    assert info["weights"] == "model.pt" and (tmp_path / "s" / "model.pt").is_file()
