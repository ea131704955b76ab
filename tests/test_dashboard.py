"""Looking at runs without a wandb server (issue 14): TensorBoard beside wandb, figures as PNGs in the run
directory, `vislab runs` with status / test metric / wall time / --watch, and progress lines of long jobs.

A tiny V1 demo run and a tiny spikes demo run (one process each, a few steps) are trained in-process; a real
`tensorboard` server is started on the finished V1 run and asked through its HTTP API for scalars and images.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO

from vislab.core.progress import Progress
from vislab.data.shards import plan_shards, write_shard_set
from vislab.families.v1.importers.static_v1 import run as import_static
from vislab.families.v1.simulate import SimulationConfig, simulate
from vislab.train.config import load_config
from vislab.train.heartbeat import write_heartbeat
from vislab.train.run import fit
from vislab.train.slurm import runs

TINY = ["data.num_workers=0", "trainer.max_epochs=1", "trainer.devices=1", "trainer.accelerator=cpu",
        "trainer.progress_bar=none", "logger.wandb=false", "trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def v1_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dash_v1")
    simulate(base / "src", SimulationConfig(sessions=2, neurons=12, train=48, validation=16, test_images=4, repeats=4))
    import_static(base / "src", base / "shards", workers=1, log=lambda s: None)
    cfg = load_config(REPO / "configs" / "v1" / "demo.yaml",
                      [f"data.root={base / 'shards'}", f"runs_root={base / 'runs'}", "data.batch_size=16",
                       "data.shuffle_buffer=32", "model.readout_init_trials=32", *TINY])
    return fit(cfg)


@pytest.fixture(scope="module")
def spikes_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dash_spikes")
    cfg = load_config(REPO / "configs" / "spikes" / "demo.yaml",
                      [f"data.root={base / 'sim'}", f"runs_root={base / 'runs'}", "data.limit_train_samples=64",
                       "data.simulate.duration_s=40", "data.simulate.neurons=4", *TINY])
    return fit(cfg)


def test_v1_figures_land_in_the_run_directory(v1_run: Path) -> None:
    names = sorted(p.name for p in (v1_run / "figures").glob("*.png"))
    assert any(n.startswith("v1_filters-step") for n in names), names
    assert any(n.startswith("v1_positions-step") for n in names), names
    assert list((v1_run / "tensorboard").glob("events.out.tfevents.*"))


def test_spike_traces_land_in_the_run_directory(spikes_run: Path) -> None:
    names = sorted(p.name for p in (spikes_run / "figures").glob("*.png"))
    assert names and all(n.startswith("val_spikes-step") for n in names), names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_tensorboard_serves_the_runs_scalars_and_images(v1_run: Path, spikes_run: Path) -> None:
    """`tensorboard --logdir` over both runs' roots: each run listed, its curves and pictures served."""
    logdir = Path(os.path.commonpath([v1_run, spikes_run]))  # the tmp folder holding both runs roots
    port = _free_port()
    tb = subprocess.Popen([str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(logdir), "--port", str(port),
                           "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                scalars = _get(f"{base}/data/plugin/scalars/tags")
                images = _get(f"{base}/data/plugin/images/tags")
                if len(scalars) >= 2 and len(images) >= 2:
                    break
            except OSError:  # the server is still starting: poll again
                pass
            assert time.time() < deadline and tb.poll() is None, "tensorboard did not serve both runs in 60 s"
            time.sleep(1)
        v1 = next(k for k in scalars if "v1-demo" in k)
        sp = next(k for k in scalars if "spikes-demo" in k)
        assert {"train/loss", "val/corr"} <= set(scalars[v1]) and "test/corr" in set(scalars[sp]), scalars
        assert {"v1/filters", "v1/positions"} <= set(images[next(k for k in images if "v1-demo" in k)])
        assert "val/spikes" in images[next(k for k in images if "spikes-demo" in k)]
        points = _get(f"{base}/data/plugin/scalars/scalars?run={urllib.parse.quote(v1)}&tag=train/loss")
        assert points and all(len(p) == 3 for p in points)  # [wall time, step, value]
    finally:
        os.killpg(tb.pid, 9)
        tb.wait()


def test_tensorboard_can_be_turned_off(tmp_path: Path, digits_root: Path) -> None:
    cfg = load_config(REPO / "configs" / "classify" / "digits.yaml",
                      [f"data.root={digits_root}", f"runs_root={tmp_path}", "model.name=tiny_cnn", "data.batch_size=32",
                       "data.limit_train_samples=64", "logger.tensorboard=false", *TINY])
    run_dir = fit(cfg)
    assert not (run_dir / "tensorboard").exists() and (run_dir / "summary.json").is_file()


# ------------------------------------------------------------------------------------------ vislab runs
def _fake_run(root: Path, name: str, beat: dict | None) -> Path:
    d = root / "exp" / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("task: classify\n")
    if beat is not None:
        write_heartbeat(d, {"host": socket.gethostname(), "every_s": 30.0, "step": 7, "first_start": time.time() - 90,
                            **beat})
    return d


def test_runs_shows_status_test_metric_and_wall_time(v1_run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    _fake_run(root, "alive", {"status": "running", "pid": os.getpid(), "time": time.time()})
    _fake_run(root, "crashed", {"status": "failed", "pid": 1, "time": time.time() - 5, "error": "RuntimeError: boom"})
    _fake_run(root, "stopped", {"status": "preempted", "pid": 1, "time": time.time() - 5, "exit_code": 3})
    _fake_run(root, "killed", {"status": "running", "pid": 2**22 + 12345, "time": time.time() - 600})
    assert runs.main([str(root), "--json"]) == 0
    rows = {json.loads(x)["run"]: json.loads(x) for x in capsys.readouterr().out.splitlines()}
    assert {k: r["status"] for k, r in rows.items()} == {
        "exp/alive": "running", "exp/crashed": "failed", "exp/stopped": "preempted", "exp/killed": "failed"}
    assert "boom" in rows["exp/crashed"]["why"] and "gone" in rows["exp/killed"]["why"]
    assert rows["exp/alive"]["wall_time_s"] >= 89

    assert runs.main([str(v1_run.parent.parent)]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0].split()
    assert header[:3] == ["RUN", "STATUS", "JOB"] and {"WALL", "TEST"} <= set(header)
    line = next(ln for ln in table.splitlines() if v1_run.name in ln)
    assert " finished " in line and "test/corr=" in line and "0:00:" in line


def test_runs_watch_refreshes_until_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _fake_run(tmp_path, "alive", {"status": "running", "pid": os.getpid(), "time": time.time()})
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runs.time, "sleep", sleep)
    assert runs.main([str(tmp_path), "--watch", "2"]) == 0
    out = capsys.readouterr().out
    assert calls == [2.0, 2.0] and out.count("exp/alive") == 2 and out.count("every 2 s") == 2


# ------------------------------------------------------------------------------------------- progress
def test_progress_prints_plain_lines_with_counts_and_rates(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress(10, "job", "samples", mode="text", every_s=0) as p:
        for _ in range(10):
            p.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11 and lines[0].startswith("[job] 1/10 samples (10%)") and "samples/s" in lines[0]
    assert "left" in lines[0] and lines[-1].startswith("[job] 10/10 samples (100%)") and "done in" in lines[-1]


def test_shard_writing_reports_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VISLAB_PROGRESS", "text")
    monkeypatch.setenv("VISLAB_PROGRESS_S", "0")
    write_shard_set(tmp_path / "train", plan_shards(list(range(9)), max_count=4), lambda i: {"__key__": f"k{i}", "cls": i},
                    split="train", log=lambda s: None)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[shard train] 4/9 samples (44%)") and "samples/s" in lines[0]
    assert lines[-1].startswith("[shard train] 9/9 samples (100%)")


def test_infer_reports_progress(tmp_path: Path, spikes_run: Path) -> None:
    env = {**os.environ, "VISLAB_PROGRESS_S": "0", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    env.pop("VISLAB_RUN_DIR", None)
    import numpy as np

    traces = np.random.default_rng(0).normal(0, 0.05, (3, 1200))
    np.save(tmp_path / "t.npy", traces)
    out = subprocess.run([sys.executable, "-m", "vislab.train.cli", "infer", str(spikes_run), str(tmp_path / "t.npy"),
                          "--frame-rate", "30", "--out", str(tmp_path / "s.npy"), "--no-plot"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[infer t.npy] 3,600/3,600 frames (100%)" in out.stderr and "frames/s" in out.stderr
