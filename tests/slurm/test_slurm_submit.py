"""The parts of cluster jobs that need no Slurm: sweep files, resource checks, the rendered script, the
restart bookkeeping, and checkpoint-and-stop on SIGTERM for a plain `vislab fit` (any machine)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from omegaconf import OmegaConf

from vislab.core.errors import ConfigError
from vislab.train.slurm import restarts
from vislab.train.slurm.sweep import array_spec, format_value, load_sweep

CONFIG = REPO / "configs" / "classify" / "digits.yaml"


# ------------------------------------------------------------------------------------------ sweeps
def test_sweep_expands_grid_times_list(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("grid:\n  optim.lr: [0.1, 0.01]\n  model.name: [tiny_cnn, small_cnn]\n"
                    "list:\n  - {seed: 0}\n  - {seed: 1, data.mean: [0.5]}\nmax_parallel: 2\n")
    sweep = load_sweep(path)
    assert len(sweep.runs) == 8 and sweep.max_parallel == 2
    assert sweep.runs[0] == {"seed": 0, "optim.lr": 0.1, "model.name": "tiny_cnn"}
    assert sweep.runs[7] == {"seed": 1, "data.mean": [0.5], "optim.lr": 0.01, "model.name": "small_cnn"}
    assert sweep.overrides(7) == ["seed=1", "data.mean=[0.5]", "optim.lr=0.01", "model.name=small_cnn"]
    assert array_spec(8, 2) == "0-7%2" and array_spec(1, None) == "0"


@pytest.mark.parametrize("value", ["tiny_cnn", "true", "001", "a b", 0.001, 3, True, None, [0.5, 0.25], {"a": 1}])
def test_override_values_round_trip_through_the_config_parser(value: object) -> None:
    assert OmegaConf.to_container(OmegaConf.from_dotlist([f"x={format_value(value)}"]))["x"] == value


@pytest.mark.parametrize(("text", "message"), [
    ("grid:\n  optim.lr: []\n", "grid key 'optim.lr' needs a non-empty list"),
    ("grdi:\n  optim.lr: [1]\n", "unknown key 'grdi'"),
    ("grid:\n  seed: [1, 2]\nlist:\n  - {seed: 3}\n", "list entry 0 sets 'seed', which the grid also varies"),
    ("max_parallel: 2\n", "defines no runs"),
    ("grid:\n  seed: [1]\nmax_parallel: 0\n", "'max_parallel' must be a positive integer"),
])
def test_bad_sweep_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert any(message in p and str(path) in p for p in e.value.problems), e.value.problems


# ------------------------------------------------------------------------------------------ resources
def _cfg(digits_root: Path, *overrides: str):  # noqa: ANN202
    from vislab.train.slurm.submit import load_configs

    return load_configs(str(CONFIG), [f"data.root={digits_root}", "data.num_workers=0", "slurm.cpus_per_task=4",
                                      *overrides], [], None)[0]


def test_clock_times_stay_clock_times(digits_root: Path, tmp_path: Path) -> None:
    """YAML 1.1 reads an unquoted 1:30:00 as the integer 5400 (base 60); Slurm would read 5400 minutes."""
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.read_text() + "slurm:\n  time: 1:30:00\n")
    from vislab.train.slurm.submit import load_configs

    assert load_configs(str(config), [f"data.root={digits_root}"], [], None)[0].slurm.time == "1:30:00"
    assert _cfg(digits_root, "slurm.time=2:00:00").slurm.time == "2:00:00"


def test_resources_follow_the_trainer(digits_root: Path) -> None:
    from vislab.train.slurm.submit import resources, time_seconds

    res = resources(_cfg(digits_root, "trainer.accelerator=gpu", "trainer.devices=8", "trainer.num_nodes=4",
                         "data.batch_size=256", "slurm.partition=gpu", "slurm.mem=64G"), "x")
    assert (res.nodes, res.ntasks_per_node, res.gpus_per_node) == (4, 8, 8)
    assert res.optional_lines() == ["--partition=gpu", "--mem=64G"]
    assert resources(_cfg(digits_root, "trainer.accelerator=auto"), "x").gpus_per_node == 2  # a cluster job: GPUs
    assert resources(_cfg(digits_root, "trainer.accelerator=cpu"), "x").gpus_per_node == 0
    assert [time_seconds(t) for t in ("90", "1:30", "1:00:00", "2-00", "1-01:00:01", "soon")] == \
           [5400, 90, 3600, 172800, 90001, None]


@pytest.mark.parametrize(("overrides", "message"), [
    (["trainer.accelerator=gpu", "slurm.gpus_per_node=4"], "slurm.gpus_per_node=4 but trainer.devices=2"),
    (["trainer.strategy=ddp_spawn"], "trainer.strategy=ddp_spawn"),
    (["slurm.time=1:00"], "leaves no time before the checkpoint signal"),
    (["slurm.time=tomorrow"], "is not a Slurm time"),
    (["slurm.env=[NCCL_DEBUG]"], "slurm.env entries must be NAME=value"),
])
def test_inconsistent_resources_are_config_errors(digits_root: Path, overrides: list[str], message: str) -> None:
    from vislab.train.slurm.submit import resources

    with pytest.raises(ConfigError) as e:
        resources(_cfg(digits_root, *overrides), "digits.yaml")
    assert any(message in p for p in e.value.problems), e.value.problems


def test_a_flag_and_an_override_that_disagree_are_refused(digits_root: Path) -> None:
    from vislab.train.slurm.submit import flag_overrides, load_configs, parser

    args = parser().parse_intermixed_args([str(CONFIG), "trainer.devices=4", "--gpus-per-node", "8"])
    with pytest.raises(ConfigError, match="'trainer.devices=4' contradicts the flag that sets trainer.devices=8"):
        load_configs(args.config, args.overrides, flag_overrides(args), None)


def test_dry_run_renders_lightnings_slurm_conventions(digits_root: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from vislab.train.slurm import cluster
    from vislab.train.slurm import submit as slurm

    monkeypatch.setattr(cluster, "available", lambda: False)  # as on a laptop: nothing to check against
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("grid:\n  optim.lr: [0.1, 0.2, 0.4]\nmax_parallel: 2\n")
    argv = [str(CONFIG), f"data.root={digits_root}", "data.num_workers=7", "trainer.accelerator=gpu",
            "run_id=sw", "slurm.env=[NCCL_SOCKET_IFNAME=ib0]", "--nodes", "2", "--gpus-per-node", "4",
            "--cpus-per-task", "8", "--time", "2-00:00:00", "--partition", "gpu", "--sweep", str(sweep), "--dry-run"]
    assert slurm.submit(argv) == 0
    script = capsys.readouterr().out
    runs = tmp_path / "runs" / "digits"
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=2-00:00:00", "#SBATCH --partition=gpu",
                 "#SBATCH --array=0-2%2", "#SBATCH --signal=SIGUSR1@90", "#SBATCH --requeue",
                 "#SBATCH --open-mode=append", f"#SBATCH --output={runs}/sw-%a/slurm-%A_%a.out",
                 f"RUN_DIR={runs}/sw-${{SLURM_ARRAY_TASK_ID}}", "export NCCL_SOCKET_IFNAME=ib0",
                 "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1", "--max-requeues 3", "srun --kill-on-bad-exit=1 "):
        assert line in script, line
    assert not (tmp_path / "runs").exists()  # a dry run creates nothing
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # valid bash


# ------------------------------------------------------------------------------------------ restarts
@pytest.mark.parametrize(("steps", "stuck"), [
    ([0], 0), ([0, 20, 40], 0), ([0, 20, 20], 1), ([0, 20, None, 20], 2), ([None, None], 2), ([0, 30, 20, 30], 2),
])
def test_restarts_without_progress_are_counted(steps: list[int | None], stuck: int) -> None:
    assert restarts.starts_without_progress([{"step": s} for s in steps]) == stuck


def test_begin_refuses_a_run_stuck_at_one_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert restarts.begin(tmp_path, max_requeues=2) == 0
    restarts.record_step(tmp_path, 100)
    for _ in range(2):
        assert restarts.begin(tmp_path, max_requeues=2) == 0
        restarts.record_step(tmp_path, 100)  # resumed where the previous start was
    assert restarts.begin(tmp_path, max_requeues=2) == restarts.EXIT_GAVE_UP
    assert "giving up: the last 2 restarts" in capsys.readouterr().err
    assert [s["step"] for s in restarts.read_starts(tmp_path)] == [100, 100, 100]


# ------------------------------------------------------------------------------------------ SIGTERM
def test_sigterm_checkpoints_at_the_next_step_and_the_run_resumes(digits_root: Path, tmp_path: Path) -> None:
    """Outside Slurm too: SIGTERM in epoch 1 -> checkpoint at the next step -> exit 3; `vislab fit RUN_DIR`
    continues at that step; a corrupt newest checkpoint falls back to the previous one (last.ckpt, epoch 0).
    Eight epochs: the signal must land before the last step (at ~90 steps/s, 67 steps are ~0.7 s of margin;
    CI once saw a signal land after the last of 20 steps, the case the next test covers)."""
    args = ["fit", str(CONFIG), f"data.root={digits_root}", "trainer.devices=1", "data.batch_size=32",
            "data.num_workers=0", "data.limit_train_samples=320", "model.name=tiny_cnn", "trainer.max_epochs=8",
            "logger.sample_keys=true",
            "logger.wandb=false", "run_id=term"]
    proc = subprocess.Popen([sys.executable, "-m", "vislab.train.cli", *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    run = tmp_path / "runs" / "digits" / "term"
    keys = run / "sample_keys" / "rank0.txt"
    deadline = time.time() + 300
    while time.time() < deadline and not (keys.is_file() and len(keys.read_text().splitlines()) >= 13):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # our own child
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-3000:]
    stopped = len(keys.read_text().splitlines())
    assert f"[vislab] SIGTERM at step {stopped}: checkpoint runs/digits/term/hpc_ckpt_1.ckpt" in err

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "hpc_ckpt_1.ckpt").write_bytes((copy / "hpc_ckpt_1.ckpt").read_bytes()[:5000])  # truncated
    from vislab.core.checkpoints import resume_checkpoint as find_resume_checkpoint

    with pytest.warns(UserWarning, match="hpc_ckpt_1.ckpt is truncated or corrupt; resuming from .*last.ckpt"):
        assert find_resume_checkpoint(copy) == copy / "checkpoints" / "last.ckpt"

    res = run_cli(["fit", str(run)], cwd=tmp_path, timeout=300)
    assert f"resuming from {run}/hpc_ckpt_1.ckpt" in res.stderr
    steps = [int(line.split()[0]) for line in keys.read_text().splitlines()]
    assert steps == list(range(1, 81))  # every step once, none repeated (10 per epoch)
    assert json.loads((run / "summary.json").read_text())["global_step"] == 80


def test_a_signal_after_the_last_step_stops_before_the_test_pass(digits_root: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM during the final validation (no step left to stop at): checkpoint, exit 3 before the test pass;
    `vislab fit RUN_DIR` trains nothing more and runs the test. (It used to be dropped: the run went on.)"""
    import os

    import pytorch_lightning as pl

    from vislab.train import run as run_module
    from vislab.train.config import load_config
    from vislab.train.keylog import read_sample_keys
    from vislab.train.slurm.preemption import EXIT_PREEMPTED

    class TermInFinalValidation(pl.Callback):
        def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.current_epoch == trainer.max_epochs - 1 and not trainer.sanity_checking:
                os.kill(os.getpid(), signal.SIGTERM)  # vislab's handler: recorded, nothing dies

    job_callbacks = run_module.job_callbacks
    monkeypatch.setattr(run_module, "job_callbacks", lambda cfg, run_dir: [TermInFinalValidation(),
                                                                           *job_callbacks(cfg, run_dir)])
    cfg = load_config(CONFIG, [f"data.root={digits_root}", f"runs_root={tmp_path}", "trainer.devices=1",
                               "data.batch_size=32", "data.num_workers=0", "data.limit_train_samples=96",
                               "model.name=tiny_cnn", "trainer.max_epochs=2", "logger.wandb=false",
                               "trainer.progress_bar=none", "logger.sample_keys=true", "run_id=late"])
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        run_module.fit(cfg)
    assert stopped.value.code == EXIT_PREEMPTED
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored when the command ends
    run = tmp_path / "digits" / "late"
    assert (run / "hpc_ckpt_1.ckpt").is_file() and not (run / "summary.json").exists()  # no test pass

    monkeypatch.setattr(run_module, "job_callbacks", job_callbacks)
    res = run_cli(["fit", str(run)], cwd=tmp_path, timeout=300)
    assert f"resuming from {run}/hpc_ckpt_1.ckpt" in res.stderr
    steps = [step for step, _ in read_sample_keys(run)[0]]
    assert steps == list(range(1, 7))  # 3 steps per epoch, each once: the restart trained nothing again
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 6 and "test/acc1" in summary["test_metrics"]


def test_after_training_signals_mean_what_they_do_without_vislab() -> None:
    """Once training is over and saved, nothing waits for a step: SIGTERM / Ctrl-C reach the previous handler
    (the default ends the test pass at once); under Slurm, SIGUSR1 (time limit soon) lets the test finish."""
    from vislab.train.slurm.signals import _Signals

    signals, seen = _Signals(), []
    signals.previous = {s: (lambda n, f: seen.append(n)) for s in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)}
    signals.active = True
    signals.handler(signal.SIGUSR1, None)
    assert signals.received == signal.SIGUSR1 and seen == []  # in training: recorded for the next step
    signals.received = 0
    signals.training_ended(under_slurm=True)
    signals.handler(signal.SIGUSR1, None)
    assert signals.received == 0 and seen == []  # ignored: the test pass goes on
    signals.handler(signal.SIGTERM, None)
    signals.handler(signal.SIGINT, None)
    assert seen == [signal.SIGTERM, signal.SIGINT] and signals.received == 0
    signals.training_ended(under_slurm=False)
    signals.handler(signal.SIGUSR1, None)
    assert seen[-1] == signal.SIGUSR1  # outside Slurm, kill -USR1 means what it always means
