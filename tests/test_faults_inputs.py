"""Bad input (issue 15): configs and `vislab infer` arguments are refused with one line naming the key or the
file, exit code 2, before any run directory, model or output exists; secrets read through `${oc.env:...}`
are never written anywhere.

Each test reproduces a case that was accepted (and trained to NaN, or overwrote data) or crashed with a
traceback on the old code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from vislab.core.errors import ConfigError
from vislab.train.cli import main
from vislab.train.config import from_dict, load_config, to_dict, to_yaml

DIGITS = REPO / "configs" / "classify" / "digits.yaml"


def _errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[str]]:
    code = main(argv)
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("vislab:")]


# --------------------------------------------------------------------------------------------- configs
OUT_OF_RANGE = {
    "optim.lr=-1": "'optim.lr'=-1.0 must be a positive number",
    "optim.lr=0": "'optim.lr'=0.0 must be a positive number",
    "data.std=[0]": "'data.std'=[0.0] must be positive",
    "optim.weight_decay=-5": "'optim.weight_decay'=-5.0 must be >= 0",
    "model.label_smoothing=2.5": "'model.label_smoothing'=2.5 must be in [0, 1)",
    "trainer.ema_decay=1.5": "'trainer.ema_decay'=1.5 must be in (0, 1)",
    "data.shuffle_buffer=-1": "'data.shuffle_buffer'=-1 must be >= 0",
    "trainer.max_steps=-5": "'trainer.max_steps'=-5 must be >= -1",
}


@pytest.mark.parametrize("override", sorted(OUT_OF_RANGE))
@pytest.mark.parametrize("verb", ["config", "fit"])
def test_out_of_range_value_is_one_line_before_any_run_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           digits_root: Path, override: str, verb: str) -> None:
    argv = [str(DIGITS), f"data.root={digits_root}", f"runs_root={tmp_path / 'runs'}", override]
    code, lines = _errors(capsys, ["config", "show", *argv] if verb == "config" else ["fit", *argv])
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"vislab: error: command line: {OUT_OF_RANGE[override]}")
    assert not (tmp_path / "runs").exists()


def test_all_range_problems_at_once_one_line_each(capsys: pytest.CaptureFixture[str], digits_root: Path) -> None:
    code, lines = _errors(capsys, ["config", "show", str(DIGITS), f"data.root={digits_root}", *OUT_OF_RANGE])
    assert code == 2 and len(lines) == len({v.split("'")[1] for v in OUT_OF_RANGE.values()})


def test_value_from_the_yaml_file_blames_the_file(tmp_path: Path, digits_root: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"task: classify\ndata:\n  root: {digits_root}\noptim:\n  lr: -1\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert e.value.problems == [f"{cfg}: 'optim.lr'=-1.0 must be a positive number"]


def test_family_check_of_an_override_blames_the_command_line(capsys: pytest.CaptureFixture[str], digits_root: Path) -> None:
    code, lines = _errors(capsys, ["config", "show", str(DIGITS), f"data.root={digits_root}", "model.num_classes=3"])
    assert code == 2 and lines[0].startswith("vislab: error: command line: 'model.num_classes'=3")


@pytest.mark.parametrize(("text", "expected"), [
    ("task: classify\nseed: ${oc.env:VISLAB_SURELY_UNSET}\n",
     "'seed': cannot resolve '${oc.env:VISLAB_SURELY_UNSET}': KeyError raised while resolving interpolation: "
     "\"Environment variable 'VISLAB_SURELY_UNSET' not found\""),
    ("task: classify\nexperiment: ${experiment}\n", "'experiment': cannot resolve '${experiment}': Recursive interpolation"),
], ids=["unset-env", "self-reference"])
def test_unresolvable_interpolation_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(f"{cfg}: {expected}")


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: classify\noptim:\n  lr: [0.1, 0.2\nseed: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert e.value.problems == [f"{cfg}: not valid YAML at line 4, column 5: did not find expected ',' or ']'"]


def test_empty_yaml_is_an_error_not_task_classify(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="the config file is empty"):
        load_config(cfg)


def test_global_batch_larger_than_the_training_set_warns(digits_root: Path) -> None:
    with pytest.warns(UserWarning, match=r"'data.batch_size'=4096 \(global\) is larger than the 1258 training samples"):
        load_config(DIGITS, [f"data.root={digits_root}", "data.batch_size=4096"])


def test_secret_from_the_environment_is_used_but_never_stored(tmp_path: Path, digits_root: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISLAB_TEST_SECRET", "hunter2-entity")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"task: classify\ndata:\n  root: {digits_root}\nlogger:\n  entity: ${{oc.env:VISLAB_TEST_SECRET}}\n"
                        "  group: ${logger.entity}-group\n")
    cfg = load_config(cfg_path)
    assert cfg.logger.entity == "hunter2-entity" and cfg.logger.group == "hunter2-entity-group"  # the run uses it
    saved = to_dict(cfg)  # what config.yaml, checkpoints (VislabModule) and the wandb config are made of
    assert "hunter2" not in json.dumps(saved) and "hunter2" not in to_yaml(cfg)
    assert saved["logger"]["entity"] == "${oc.env:VISLAB_TEST_SECRET}"
    assert from_dict(saved).logger.entity == "hunter2-entity"  # resolved again where the variable is set
    monkeypatch.delenv("VISLAB_TEST_SECRET")
    again = from_dict(saved)  # a checkpoint read on another machine: the text stays, nothing crashes
    assert again.logger.entity == "${oc.env:VISLAB_TEST_SECRET}" and "hunter2" not in json.dumps(to_dict(again))


# ----------------------------------------------------------------------------------------------- infer
@pytest.fixture
def traces(tmp_path: Path) -> Path:
    path = tmp_path / "rec.npy"
    np.save(path, np.random.default_rng(0).normal(size=(3, 600)))
    return path


def _infer(capsys: pytest.CaptureFixture[str], traces: Path, *args: str) -> tuple[int, list[str]]:
    # the model does not exist: every check below must fire before it would be loaded
    return _errors(capsys, ["infer", str(traces.parent / "no-model"), str(traces), *args])


def test_infer_out_equal_to_input_is_refused(capsys: pytest.CaptureFixture[str], traces: Path) -> None:
    before = traces.read_bytes()
    code, lines = _infer(capsys, traces, "--frame-rate", "30", "--out", str(traces))
    assert code == 2 and lines == [f"vislab: error: --out {traces} would overwrite the input {traces}; choose another output name"]
    assert traces.read_bytes() == before


def test_infer_out_directory_or_without_npy_is_refused(capsys: pytest.CaptureFixture[str], traces: Path) -> None:
    code, lines = _infer(capsys, traces, "--frame-rate", "30", "--out", str(traces.parent))
    assert code == 2 and lines[0].startswith(f"vislab: error: --out {traces.parent} is a directory")
    code, lines = _infer(capsys, traces, "--frame-rate", "30", "--out", str(traces.parent / "spikes"))
    assert code == 2 and "must end with .npy" in lines[0]


@pytest.mark.parametrize("rate", ["inf", "nan", "0", "-30"])
def test_infer_frame_rate_must_be_finite_and_positive(capsys: pytest.CaptureFixture[str], traces: Path, rate: str) -> None:
    code, lines = _infer(capsys, traces, "--frame-rate", rate, "--out", str(traces.parent / "s.npy"))
    assert code == 2 and len(lines) == 1 and "--frame-rate must be a positive, finite number" in lines[0]


def test_infer_zero_byte_npy_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    code, lines = _infer(capsys, empty, "--frame-rate", "30", "--out", str(tmp_path / "s.npy"))
    assert code == 2 and lines == [f"vislab: error: {empty}: empty file (0 bytes)"]
    truncated = tmp_path / "cut.npy"
    np.save(truncated, np.zeros((2, 100)))
    truncated.write_bytes(truncated.read_bytes()[:60])
    code, lines = _infer(capsys, truncated, "--frame-rate", "30", "--out", str(tmp_path / "s.npy"))
    assert code == 2 and len(lines) == 1 and str(truncated) in lines[0]


def _csv(path: Path, header: str | None, values: np.ndarray) -> Path:
    rows = ([header] if header is not None else []) + [",".join(f"{v:.6f}" for v in row) for row in values.T]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("header", ["1,2,3,4", "0,1,2,3", "17,4,230,9", "n1,n2,n3,n4"])
def test_csv_numeric_header_is_not_read_as_a_frame(tmp_path: Path, header: str) -> None:
    from vislab.families.spikes.traces import read_traces

    values = np.random.default_rng(1).normal(size=(4, 3600))
    path = _csv(tmp_path / "rec.csv", header, values)
    if header[0].isdigit():
        with pytest.warns(UserWarning, match="read as a header, not as a frame"):
            got = read_traces(path)
    else:
        got = read_traces(path)
    assert got.shape == (4, 3600)
    np.testing.assert_allclose(got, values, atol=1e-6)


def test_csv_header_modes(tmp_path: Path) -> None:
    from vislab.families.spikes.traces import read_traces

    values = np.random.default_rng(2).normal(size=(4, 50))
    plain = _csv(tmp_path / "plain.csv", None, values)
    assert read_traces(plain).shape == (4, 50)  # no header: the first frame is data
    assert read_traces(plain, csv_header="yes").shape == (4, 49)
    ids = _csv(tmp_path / "ids.csv", "1,2,3,4", values)
    assert read_traces(ids, csv_header="yes").shape == (4, 50)
    names = read_traces(_csv(tmp_path / "names.csv", "a,b,c,d", values), csv_header="no")  # as asked: a NaN frame
    assert names.shape == (4, 51) and np.isnan(names[:, 0]).all()
