"""End to end on a tiny shard set (4 images, two wnid classes) with a tiny 1000-way model; bad input -> exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _cli(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vislab.families.robustness", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch
    from safetensors.torch import save_file

    from vislab.data.importers.imagefolder import run as shard_imagefolder
    from vislab.models.registry import create_model

    base = tmp_path_factory.mktemp("robustness")
    rng = np.random.default_rng(0)
    for wnid in ("n02102040", "n03417042"):  # springer spaniel (dog), garbage truck (truck)
        (base / "src" / "val" / wnid).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(base / "src" / "val" / wnid / f"{i}.png")
    shard_imagefolder(base / "src", base / "shards", workers=1, log=lambda s: None)
    torch.manual_seed(0)
    spec = {"builder": "create_model", "kwargs": {"name": "tiny_cnn", "num_classes": 1000}}
    net = create_model("tiny_cnn", num_classes=1000).eval()
    (base / "export").mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(base / "export" / "model.safetensors"))
    info = {"spec": spec, "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": [f"c{i}" for i in range(1000)],
            "input_size": [3, 224, 224]}
    (base / "export" / "model.json").write_text(json.dumps(info))
    return {"base": base, "data": base / "shards", "model": base / "export"}


def test_end_to_end_tiny(tiny):
    out = tiny["base"] / "run"
    args = [str(tiny["model"]), "--data", str(tiny["data"]), "--degradations",
            "contrast:100/5,uniform-noise:0.35,rotation:90,phase-scrambling:90,power-equalisation,false-colour,high-pass:inf/1,low-pass:3,colour,salt-and-pepper:0.1",
            "--attacks", "l2", "--attack-images", "2", "--decision-images", "1", "--fmn-steps", "5", "--hsj-steps", "2",
            "--batch-size", "2", "--out", str(out)]
    r = _cli(args, tiny["base"])
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "robustness.json").read_text())
    assert res["n_images"] == 4
    c = res["degradations"]["contrast"]["levels"]["5"]
    assert c["n_images"] == 4 and c["n_images_16"] == 4 and c["human_accuracy_16"] == pytest.approx(0.353, abs=1e-3)
    assert res["degradations"]["salt-and-pepper"]["levels"]["0.1"]["human_accuracy_16"] is None
    assert set(res["attacks"]["l2"]) == {"gradient", "decision", "gradient_masking"}
    for png in ("curves.png", "curve_contrast.png", "perturbations.png"):
        assert (out / png).stat().st_size > 1000
    assert "16-class" in r.stdout and "gradient masking" in r.stdout
    # resume: every degradation and attack is read back, same numbers
    first = (out / "progress" / "contrast.json").stat().st_mtime_ns
    r2 = _cli(args, tiny["base"])
    assert r2.returncode == 0 and (out / "progress" / "contrast.json").stat().st_mtime_ns == first
    assert json.loads((out / "robustness.json").read_text())["degradations"] == res["degradations"]


@pytest.mark.parametrize("extra, culprit", [
    (["--degradations", "contrast:200"], "outside the paper's range"),
    (["--degradations", "blur"], "unknown degradation 'blur'"),
    (["--degradations", "rotation:45"], "rotations are 0, 90, 180 or 270"),
    (["--attacks", "l3"], "unknown norm 'l3'"),
])
def test_bad_levels_exit_2_before_reading_images(tiny, extra, culprit, tmp_path):
    broken = tmp_path / "shards"  # a shard set whose images cannot be read: the error must come first
    broken.mkdir()
    manifest = json.loads((tiny["data"] / "val" / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(manifest))
    r = _cli([str(tiny["model"]), "--data", str(broken), *extra], tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and culprit in lines[0], r.stderr


def test_model_without_head_and_mismatched_classes(tiny, tmp_path):
    info = json.loads((tiny["model"] / "model.json").read_text())
    headless = tmp_path / "headless"
    headless.mkdir()
    (headless / "model.safetensors").symlink_to(tiny["model"] / "model.safetensors")
    (headless / "model.json").write_text(json.dumps({**info, "class_names": None}))
    r = _cli([str(headless), "--data", str(tiny["data"])], tmp_path)
    assert r.returncode == 2 and "no classification head" in r.stderr
    other = tmp_path / "other"  # data whose classes are neither the model's names nor ImageNet wnids
    other.mkdir()
    manifest = json.loads((tiny["data"] / "val" / "manifest.json").read_text())
    manifest["meta"]["classes"] = ["cats", "dogs"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    r = _cli([str(tiny["model"]), "--data", str(other)], tmp_path)
    assert r.returncode == 2 and "classes do not match the model's" in r.stderr, r.stderr
