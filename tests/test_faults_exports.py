"""Exports and checkpoints under faults (issue 15): never mixed, never silently tampered with.

Each test reproduces a case that loaded without complaint or crashed without naming the culprit: an export
into a used directory (the old ONNX stayed and loaded), a bit-flipped safetensors, an edited model.json
(mean, std, num_classes), `--out` naming a file, and a random file given as a checkpoint. The checkpoint is
made by hand from a small_cnn (no training run).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO

from vislab.core.errors import ConfigError
from vislab.models.exported import field_hashes, load_exported, onnx_session
from vislab.train.cli import main
from vislab.train.export import export_run

DIGITS = REPO / "configs" / "classify" / "digits.yaml"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classify checkpoint as `vislab fit` writes it (network weights + the run's config and meta)."""
    from vislab.core.config import to_dict
    from vislab.families.classify.module import model_spec
    from vislab.models.exported import build_from_spec
    from vislab.train.config import load_config

    base = tmp_path_factory.mktemp("ckpt")
    cfg = load_config(DIGITS, [f"data.root={base / 'gone'}"], check=False)  # data elsewhere: random inputs
    meta = {"classes": [str(i) for i in range(cfg.model.num_classes)]}
    torch.manual_seed(0)
    net = build_from_spec(model_spec(cfg, meta))  # type: ignore[arg-type]
    path = base / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                "vislab": {"config": to_dict(cfg), "meta": meta}}, path)
    return path


@pytest.fixture
def export(ckpt: Path, tmp_path: Path) -> Path:
    with pytest.warns(UserWarning, match="random inputs"):
        return export_run(ckpt, tmp_path / "export", ("safetensors", "onnx"))


def _model_json(d: Path) -> dict:
    return json.loads((d / "model.json").read_text())


def test_export_records_hashes_and_loads(export: Path) -> None:
    info = _model_json(export)
    assert info["format"] == "vislab-export/3"
    assert set(info["integrity"]["files"]) == {"model.safetensors", "model.onnx"}
    load_exported(export)
    onnx_session(export)


def test_export_into_a_used_directory_is_refused_and_force_replaces_it(ckpt: Path, export: Path) -> None:
    with pytest.raises(ConfigError, match="already holds an export .* --force"):
        export_run(ckpt, export, ("safetensors",))
    assert (export / "model.onnx").is_file()  # nothing touched
    with pytest.warns(UserWarning):
        export_run(ckpt, export, ("safetensors",), force=True)
    assert not (export / "model.onnx").exists()  # the previous model's ONNX cannot be loaded by mistake
    with pytest.raises(FileNotFoundError, match="this export has: safetensors"):
        onnx_session(export)


def test_leftover_file_of_another_export_is_refused(ckpt: Path, export: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    with pytest.warns(UserWarning):
        export_run(ckpt, other, ("safetensors", "onnx"))
    (other / "model.onnx").write_bytes((other / "model.onnx").read_bytes() + b"\0")  # "another model's" ONNX
    (export / "model.onnx").write_bytes((other / "model.onnx").read_bytes())
    with pytest.raises(ConfigError, match=r"model\.onnx: sha256 differs"):
        onnx_session(export)


def test_non_export_directory_is_refused_even_with_force(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty and not an export"):
        export_run(ckpt, out, force=True)
    assert (out / "notes.txt").read_text() == "keep me"


def test_bit_flipped_weights_fail_to_load_naming_the_file(export: Path) -> None:
    weights = export / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x40  # one bit in the last tensor's bytes: safetensors itself loads it happily
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"model\.safetensors: sha256 differs"):
        load_exported(export)


@pytest.mark.parametrize(("key", "value"), [("mean", [0.0]), ("std", [1.0]), ("num_classes", 3)])
def test_edited_model_json_fails_to_load_naming_the_entry(export: Path, key: str, value: object) -> None:
    info = _model_json(export)
    info[key] = value
    (export / "model.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match=f"'{key}' differ"):
        load_exported(export)


def test_num_classes_is_checked_against_the_network(export: Path) -> None:
    info = _model_json(export)
    info["num_classes"] = 3
    info["integrity"]["fields"] = field_hashes(info)  # even with the hashes redone, the spec disagrees
    (export / "model.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="num_classes 3 contradicts the network's 10 outputs"):
        load_exported(export)


def test_removed_integrity_block_is_refused(export: Path) -> None:
    info = _model_json(export)
    del info["integrity"]
    (export / "model.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="'integrity' block is missing"):
        load_exported(export)


def test_export_out_naming_a_file_is_one_line(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "model.bin"
    target.write_text("x")
    assert main(["export", str(ckpt), "--out", str(target)]) == 2
    assert capsys.readouterr().err.strip() == f"vislab: error: --out {target} is a file; name a new or empty directory for the export"


@pytest.mark.parametrize("content", [b"", b"\x80\x04K\x01.", b"random bytes " * 100], ids=["empty", "pickle", "text"])
def test_random_file_as_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    bogus = tmp_path / "random.ckpt"
    bogus.write_bytes(content)
    assert main(["export", str(bogus), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vislab: error: {bogus}: not a checkpoint") and "mmap" not in err
    assert len(err.splitlines()) == 1
