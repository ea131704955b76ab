"""End to end on a tiny shard set (4 val images of two wnid classes, 40 x 48 px) with tiny models: one process,
two processes (torchrun, gloo) giving the same JSON, resume, a `vislab fit` run directory as MODEL, the Slurm
job script (`vislab submit robustness --dry-run`), and bad input -> one line, exit 2, before any image is read.

Subprocesses only where a process boundary is the point (exit codes, torchrun, `vislab fit`); the rest calls
the verb in-process. Nothing here reads ../shared/data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from vislab.core.errors import ConfigError
from vislab.families.robustness.cli import main as robustness

REPO = Path(__file__).resolve().parents[2]
DEGRADATIONS = ("contrast:100/5,uniform-noise:0.35,rotation:90,phase-scrambling:90,power-equalisation,false-colour,"
                "high-pass:inf/1,low-pass:3,colour,salt-and-pepper:0.1")
WNIDS = ("n02102040", "n03417042")  # springer spaniel (dog), garbage truck (truck)


def _run(cmd: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """A child in its own process group (torchrun's workers too), killed as a group on timeout."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out after {timeout} s\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _verb(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "vislab.families.robustness", *args], cwd)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from safetensors.torch import save_file

    from vislab.data.importers.imagefolder import run as shard_imagefolder
    from vislab.models.registry import create_model

    base = tmp_path_factory.mktemp("robustness")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in WNIDS:
            (base / "src" / split / wnid).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(base / "src" / split / wnid / f"{i}.png")
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


def _args(tiny: dict[str, Path], out: Path) -> list[str]:
    return [str(tiny["model"]), "--data", str(tiny["data"]), "--degradations", DEGRADATIONS, "--attacks", "l2",
            "--attack-images", "3", "--decision-images", "1", "--fmn-steps", "5", "--hsj-steps", "1",
            "--batch-size", "2", "--out", str(out)]


@pytest.fixture(scope="module")
def one_process(tiny: dict[str, Path]) -> tuple[list[str], subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tiny["base"] / "run"
    args = _args(tiny, out)
    r = _verb(args, tiny["base"])
    assert r.returncode == 0, r.stderr[-3000:]
    return args, r, json.loads((out / "robustness.json").read_text())


def test_end_to_end_tiny_and_resume(one_process, capsys) -> None:
    args, r, res = one_process
    out = Path(args[-1])
    assert res["n_images"] == 4 and res["world_size"] == 1
    c = res["degradations"]["contrast"]["levels"]["5"]
    assert c["n_images"] == 4 and c["n_images_16"] == 4 and c["human_accuracy_16"] == pytest.approx(0.353, abs=1e-3)
    assert res["degradations"]["salt-and-pepper"]["levels"]["0.1"]["human_accuracy_16"] is None
    assert set(res["attacks"]["l2"]) == {"gradient", "decision", "gradient_masking"}
    for png in ("curves.png", "curve_contrast.png", "perturbations.png"):
        assert (out / png).stat().st_size > 1000
    assert "16-class" in r.stdout and "gradient masking" in r.stdout
    # resume (in-process): every degradation and attack is read back, the same numbers
    first = (out / "progress" / "contrast.json").stat().st_mtime_ns
    assert robustness(args) == 0
    assert (out / "progress" / "contrast.json").stat().st_mtime_ns == first
    again = json.loads((out / "robustness.json").read_text())
    assert again["degradations"] == res["degradations"] and again["attacks"] == res["attacks"]


def _comparable(res: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in res.items() if k not in ("seconds", "world_size", "settings")}


def test_two_processes_give_the_one_process_json(one_process, tiny) -> None:
    """torchrun, 2 gloo ranks: each image evaluated exactly once (2 per rank), everything gathered on rank 0."""
    args, _, res1 = one_process
    out = tiny["base"] / "run2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "vislab.families.robustness", *args[:-1], str(out)]
    r = _run(cmd, tiny["base"], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("16-class") == 1  # one summary table: rank 0 only
    res2 = json.loads((out / "robustness.json").read_text())
    assert res2["world_size"] == 2
    assert _comparable(res2) == _comparable(res1)
    records = json.loads((out / "progress" / "contrast.json").read_text())["result"]
    assert sorted(records["keys"]) == sorted(json.loads((Path(args[-1]) / "progress" / "contrast.json")
                                                        .read_text())["result"]["keys"])
    assert len(set(records["keys"])) == 4  # every image exactly once


@pytest.mark.parametrize("extra, culprit", [
    (["--degradations", "contrast:200"], "outside the paper's range"),
    (["--degradations", "blur"], "unknown degradation 'blur'"),
    (["--degradations", "rotation:45"], "rotations are 0, 90, 180 or 270"),
    (["--attacks", "l3"], "unknown norm 'l3'"),
])
def test_bad_levels_fail_before_reading_images(tiny, extra, culprit, tmp_path) -> None:
    broken = tmp_path / "shards"  # a shard set whose images cannot be read: the error must come first
    broken.mkdir()
    manifest = json.loads((tiny["data"] / "val" / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError) as e:
        robustness([str(tiny["model"]), "--data", str(broken), *extra])
    assert len(e.value.problems) == 1 and culprit in e.value.problems[0]
    if extra == ["--attacks", "l3"]:  # the process boundary once: one line on stderr, exit 2
        r = _verb([str(tiny["model"]), "--data", str(broken), *extra], tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and culprit in lines[0], r.stderr


def test_model_without_head_and_mismatched_classes(tiny, tmp_path) -> None:
    info = json.loads((tiny["model"] / "model.json").read_text())
    headless = tmp_path / "headless"
    headless.mkdir()
    (headless / "model.safetensors").symlink_to(tiny["model"] / "model.safetensors")
    (headless / "model.json").write_text(json.dumps({**info, "class_names": None}))
    with pytest.raises(ConfigError, match="no classification head"):
        robustness([str(headless), "--data", str(tiny["data"])])
    other = tmp_path / "other"  # data whose classes are neither the model's names nor ImageNet wnids
    other.mkdir()
    manifest = json.loads((tiny["data"] / "val" / "manifest.json").read_text())
    manifest["meta"]["classes"] = ["cats", "dogs"]
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="classes do not match the model's"):
        robustness([str(tiny["model"]), "--data", str(other)])


FIT_CONFIG = """task: classify
experiment: tiny
data: {{root: {root}, batch_size: 4, num_workers: 0, shuffle_buffer: 8, train_crop: 32, eval_resize: 32,
        eval_crop: 32, hflip: false, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}
model: {{name: tiny_cnn, num_classes: 2}}
trainer: {{accelerator: cpu, devices: 1, max_epochs: 1}}
logger: {{mode: disabled}}
"""


def test_run_directory_and_checkpoint_as_model(tiny, tmp_path) -> None:
    """A real `vislab fit` classify run (2 wnid classes, 32 px): its directory and its .ckpt are MODELs; the
    model's own class names are the data's wnids, so the 16-class decision uses them; 224 px -> 32 px inside."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(FIT_CONFIG.format(root=tiny["data"]))
    r = _run([sys.executable, "-m", "vislab.train.cli", "fit", str(cfg), f"runs_root={tmp_path / 'runs'}"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    common = ["--data", str(tiny["data"]), "--degradations", "contrast:100/5,rotation:180", "--attacks", "none"]
    assert robustness([str(run_dir), *common, "--out", str(tmp_path / "a")]) == 0
    res = json.loads((tmp_path / "a" / "robustness.json").read_text())
    level = res["degradations"]["contrast"]["levels"]["100"]
    assert level["n_images"] == 4 and level["n_images_16"] == 4 and level["accuracy_16"] is not None
    ckpt = next((run_dir / "checkpoints").glob("*.ckpt"))
    assert robustness([str(ckpt), *common, "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "robustness.json").read_text())["degradations"] == res["degradations"]
    old = torch.load(ckpt, weights_only=True)  # a checkpoint from before checkpoints recorded their spec
    del old["vislab"]["spec"]
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(ConfigError, match="export its run first"):
        robustness([str(tmp_path / "old.ckpt"), *common])


def test_submit_dry_run_prints_the_job_script(tiny, tmp_path, capsys, monkeypatch) -> None:
    from vislab.train.slurm import cluster
    from vislab.train.slurm.submit import submit

    monkeypatch.setattr(cluster, "available", lambda: False)  # no Slurm needed for --dry-run
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "rob"
    assert submit(["robustness", str(tiny["model"]), "--data", str(tiny["data"]), "--attacks", "none",
                   "--nodes", "2", "--gpus-per-node", "4", "--time", "2:00:00", "--partition", "gpu",
                   "--out", str(out), "--dry-run"]) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --time=2:00:00", "#SBATCH --partition=gpu", "#SBATCH --requeue", "MASTER_PORT="):
        assert line in script, script
    assert f"-m vislab.families.robustness {tiny['model']} --data {tiny['data']} --attacks none --out {out}" in script
    assert not out.exists()  # --dry-run creates nothing
    with pytest.raises(ConfigError, match="unknown degradation 'blur'"):  # the verb's checks come before queueing
        submit(["robustness", str(tiny["model"]), "--data", str(tiny["data"]), "--degradations", "blur", "--dry-run"])
