"""`vislab export` in every format, for a classifier (transfer run, classify run) and a saliency model:
reloaded and compared on real batches, dynamic batch size, backbones by path with their provenance chain,
clear errors for other architectures and misshapen tensors, wandb artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli
from transfer_data import fixation_shards, image_shards, single_thread, tiny, tiny_saliency_overrides  # noqa: F401

from vislab.core.errors import ConfigError
from vislab.models.exported import load_exported, load_torchscript, onnx_session
from vislab.train.export import FORMATS, export_run

pytestmark = pytest.mark.usefixtures("single_thread")


def _fit(config: str, overrides: list[str]) -> Path:
    from vislab.train.config import load_config
    from vislab.train.run import fit

    return fit(load_config(REPO / "configs" / config, overrides))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict[str, Path]:
    request.getfixturevalue("single_thread")  # before the fits, not after
    base = tmp_path_factory.mktemp("export")
    images = image_shards(base / "img", {"train": 8, "val": 4})
    fixations = fixation_shards(base / "fix", n_images=12)
    return {
        "images": images,
        "base": base,
        "transfer": _fit("transfer/linear_probe_lite0.yaml", tiny(images, base / "runs", "trainer.max_epochs=2")),
        "saliency": _fit("transfer/saliency_osie.yaml", tiny_saliency_overrides(
            fixations, base / "runs", base / "cache", "trainer.max_epochs=1", "logger.wandb=false")),
    }


def _check_all_formats(run: Path, out: Path) -> dict:
    export_run(run, out, FORMATS)
    info = json.loads((out / "model.json").read_text())
    assert set(info["verification"]) == set(FORMATS) and info["files"]["onnx"] == "model.onnx"
    assert all(v["batch_size"] > 2 for v in info["verification"].values())  # traced at 2, checked at more
    assert info["verification"]["safetensors"]["max_abs_diff"] == 0.0 and info["max_abs_diff"] < 1e-3
    model, _ = load_exported(out)
    x = torch.randn(5, *info["input_size"])  # a batch size never seen by the tracer
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(load_torchscript(out)(x), ref, atol=1e-4)
    got = torch.from_numpy(onnx_session(out).run(None, {"input": x.numpy()})[0])
    assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-3)
    return info


def test_every_format_round_trips_a_transfer_classifier(runs: dict[str, Path]) -> None:
    info = _check_all_formats(runs["transfer"], runs["base"] / "exp_transfer")
    assert info["kind"] == "model" and info["class_names"] == ["class0", "class1", "class2"]
    assert info["input_size"] == [3, 32, 32] and info["provenance"][0]["run"] == str(runs["transfer"])
    # a state-dict-only export loads the same way
    export_run(runs["transfer"], runs["base"] / "exp_sd", ["state_dict"])
    assert not (runs["base"] / "exp_sd" / "model.safetensors").exists()
    a, _ = load_exported(runs["base"] / "exp_sd")
    b, _ = load_exported(runs["base"] / "exp_transfer")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_every_format_round_trips_a_saliency_model(runs: dict[str, Path]) -> None:
    info = _check_all_formats(runs["saliency"], runs["base"] / "exp_saliency")
    assert info["task"] == "saliency" and info["input_size"] == [3, 64, 64]
    model, _ = load_exported(runs["base"] / "exp_saliency")
    with torch.no_grad():
        log_p = model(torch.randn(2, 3, 64, 64))
    assert log_p.shape == (2, 16, 16) and torch.allclose(log_p.flatten(1).logsumexp(1), torch.zeros(2), atol=1e-5)
    with pytest.raises(ConfigError, match="a 'saliency' model has no classification backbone"):
        export_run(runs["saliency"], runs["base"] / "nope", backbone_only=True)


def test_backbone_exports_load_by_path_and_keep_the_provenance_chain(runs: dict[str, Path]) -> None:
    from vislab.models.backbones import load_backbone

    out = runs["base"] / "bb"
    res = run_cli(["export", str(runs["transfer"]), "--out", str(out), "--backbone-only", "--format", "safetensors,onnx"],
                  cwd=runs["base"])
    assert res.stdout.strip() == str(out)
    info = json.loads((out / "model.json").read_text())
    assert info["kind"] == "backbone" and info["num_classes"] == 0 and info["class_names"] is None
    bb = load_backbone(out)
    full, _ = load_exported(runs["base"] / "exp_transfer") if (runs["base"] / "exp_transfer").is_dir() else (None, None)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        emb = bb.eval()(x)
        assert emb.shape == (2, 512) and bb.num_classes == 0
        if full is not None:
            assert torch.allclose(emb, full.forward_head(full.forward_features(x), pre_logits=True))
    assert bb.meta.provenance[0]["run"] == str(runs["transfer"]) and bb.meta.mean == info["mean"]
    headed = runs["base"] / "bb_head"
    export_run(runs["transfer"], headed, backbone_only=True, with_head=True)
    bbh = load_backbone(headed)
    assert bbh.num_classes == 3 and bbh.meta.class_names == ["class0", "class1", "class2"]
    # a new run on that backbone: its export names both runs, newest first
    second = _fit("transfer/linear_probe_lite0.yaml", tiny(runs["images"], runs["base"] / "runs2", "trainer.max_epochs=1",
                                                           f"model.backbone.weights={out}"))
    export_run(second, runs["base"] / "exp_second")
    chain = [p["run"] for p in json.loads((runs["base"] / "exp_second" / "model.json").read_text())["provenance"]]
    assert chain == [str(second), str(runs["transfer"])]


def test_other_architectures_and_misshapen_tensors_are_named(runs: dict[str, Path], tmp_path: Path) -> None:
    from vislab.models.backbones import load_backbone
    from vislab.train.config import load_config

    src = runs["base"] / "exp_transfer"
    if not src.is_dir():
        export_run(runs["transfer"], src)
    with pytest.raises(ValueError, match="holds a resnet18 backbone, not resnet50"):
        load_backbone(src, arch="resnet50")
    with pytest.raises(ConfigError, match="holds a resnet18 backbone, model.backbone.name is resnet34"):
        load_config(REPO / "configs" / "transfer" / "linear_probe_lite0.yaml",
                    tiny(runs["images"], tmp_path, "model.backbone.name=resnet34", f"model.backbone.weights={src}"))
    for key, value, message in [("name", "resnet34", r"missing tensors \['body.layer1.2.conv1.weight'"),
                                ("num_classes", 5, r"shape mismatch \['classifier.weight \(3, 512\) vs model \(5, 512\)")]:
        edited = tmp_path / key
        edited.mkdir()
        info = json.loads((src / "model.json").read_text())
        info["spec"]["kwargs"][key] = value
        # an export from before integrity hashes (format 2) reaches the weights check; format 3 would stop at the
        # edited entry (tests/test_faults_exports.py)
        info["format"] = "vislab-export/2"
        info.pop("integrity")
        (edited / "model.json").write_text(json.dumps(info))
        (edited / "model.safetensors").symlink_to(src / "model.safetensors")
        with pytest.raises(ValueError, match=message):
            load_exported(edited)
    export_run(runs["transfer"], tmp_path / "ts_only", ["torchscript"])
    with pytest.raises(FileNotFoundError, match="no safetensors file .* this export has: torchscript"):
        load_exported(tmp_path / "ts_only")
    with pytest.raises(ConfigError, match="--format 'onnx,tflite': unknown format 'tflite'"):
        from vislab.train.export import parse_formats

        parse_formats("onnx,tflite")


def test_classify_run_exports_its_backbone(digits_root: Path, tmp_path: Path) -> None:
    from vislab.models.backbones import load_backbone

    run = _fit("classify/digits.yaml", [f"data.root={digits_root}", f"runs_root={tmp_path}", "trainer.devices=1",
                                        "trainer.max_epochs=1", "data.num_workers=0", "logger.wandb=false",
                                        "trainer.progress_bar=none", "model.name=tiny_cnn"])
    export_run(run, tmp_path / "bb", ["safetensors", "torchscript"], backbone_only=True)
    bb = load_backbone(tmp_path / "bb")
    assert bb.arch == "tiny_cnn" and bb.num_classes == 0 and bb.meta.input_size == 8
    with torch.no_grad():
        assert bb(torch.randn(3, 1, 8, 8)).shape == (3, 16)


def test_export_is_logged_as_a_wandb_artifact(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "art"
    export_run(runs["transfer"], out, ["safetensors"], wandb=True)
    w = json.loads((out / "model.json").read_text())["wandb"]
    assert w["mode"] == "offline" and w["artifact"].endswith("-model")
    offline = list((out / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
