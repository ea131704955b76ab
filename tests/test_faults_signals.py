"""Ctrl-C: the first one stops like SIGTERM (every rank checkpoints at the next step, exit code 3); a
second one ends the process at once, without a checkpoint.

Issue 15 case 8: Ctrl-C said "graceful shutdown" (Lightning) and wrote no checkpoint. The signal goes to the
whole process group, as a terminal sends it: both DDP ranks and the loader workers get it.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import torch
from conftest import REPO, start_cli

from vislab.core.checkpoints import is_intact

CFG = str(REPO / "configs" / "classify" / "digits.yaml")


def _args(root: Path, runs: Path, *extra: str) -> list[str]:
    return ["fit", CFG, f"data.root={root}", f"runs_root={runs}", "run_id=ctrlc", "model.name=tiny_cnn",
            "trainer.max_epochs=100", "logger.wandb=false", "trainer.progress_bar=text", "trainer.log_every_n_steps=1",
            *extra]


def _wait_for(log: Path, pattern: str, proc: object, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not re.search(pattern, log.read_text()):
        assert proc.poll() is None, f"exited {proc.returncode} before {pattern!r}:\n{log.read_text()[-3000:]}"  # type: ignore[attr-defined]
        assert time.time() < deadline, f"no {pattern!r} after {timeout} s"
        time.sleep(0.02)


def test_ctrl_c_checkpoints_every_rank_and_exits_3(digits_root: Path, tmp_path: Path) -> None:
    log = tmp_path / "fit.err"
    proc = start_cli(_args(digits_root, tmp_path, "trainer.devices=2", "trainer.accelerator=cpu", "data.num_workers=1"),
                     cwd=tmp_path, stderr=log)
    try:
        _wait_for(log, r" step 5 loss", proc)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 3, text[-3000:]
    assert text.count("[vislab] Ctrl-C: writing a checkpoint at the next step") == 1  # rank 0 speaks
    stopped = re.search(r"\[vislab\] SIGINT at step (\d+): checkpoint (\S+) written", text)
    assert stopped, text[-3000:]
    ckpt = Path(stopped[2])
    assert ckpt == tmp_path / "digits" / "ctrlc" / "hpc_ckpt_1.ckpt" and is_intact(ckpt)
    assert torch.load(ckpt, weights_only=True, map_location="cpu")["global_step"] == int(stopped[1]) >= 5
    assert "Traceback" not in text and "graceful shutdown" not in text


def test_a_second_ctrl_c_aborts_at_once(digits_root: Path, tmp_path: Path) -> None:
    log = tmp_path / "fit.err"
    proc = start_cli(_args(digits_root, tmp_path, "trainer.devices=1", "data.num_workers=0"), cwd=tmp_path, stderr=log)
    run = tmp_path / "digits" / "ctrlc"
    try:
        while not (run / "config.yaml").exists():  # vislab handles signals from here on (still starting up)
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        _wait_for(log, r"Ctrl-C again aborts at once", proc)
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.time()
        code = proc.wait(timeout=30)
        seconds = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == -signal.SIGINT, log.read_text()[-3000:]  # ended by the signal itself: a shell shows 130
    assert seconds < 5 and not list(run.glob("hpc_ckpt_*.ckpt")) and " step 1 loss" not in log.read_text()
