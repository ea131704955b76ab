"""Resume is exact: a run stopped by SIGTERM or killed (kill -9) and resumed ends with the weights and test
metrics of the uninterrupted run, bit for bit on CPU, with one process and with two (gloo DDP).

Issue 15 case 5: dropout, and every DataLoader's worker seeds, drew from the global torch RNG, which a resume
did not restore; same batches, other losses from the first resumed step. The runs are tiny (tiny_cnn on the
digits, 20 steps an epoch) and go through `vislab fit` in subprocesses (Lightning's ddp inside pytest would
re-run pytest).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli, start_cli

from vislab.data.manifest import check_shard_set
from vislab.data.pipeline import StreamLoader, TrainStream
from vislab.train.resume import rng_state, set_rng_state

CFG = str(REPO / "configs" / "classify" / "digits.yaml")
STEPS_PER_EPOCH = 20  # 1,258 training digits, global batch 64


def _args(root: Path, runs: Path, run_id: str, *extra: str) -> list[str]:
    return ["fit", CFG, f"data.root={root}", f"runs_root={runs}", f"run_id={run_id}", "model.name=tiny_cnn",
            "trainer.max_epochs=4", "logger.wandb=false", "trainer.progress_bar=text", "trainer.log_every_n_steps=1",
            *extra]


def _interrupt(args: list[str], cwd: Path, log: Path, at_step: int, sig: signal.Signals) -> int:
    """Run `vislab ARGS` and send `sig` to its whole process group once rank 0 reports step >= at_step."""
    proc = start_cli(args, cwd=cwd, stderr=log)
    deadline = time.time() + 300
    try:
        while proc.poll() is None and time.time() < deadline:
            steps = re.findall(r" step (\d+) loss", log.read_text())
            if steps and int(steps[-1]) >= at_step:
                os.killpg(proc.pid, sig)
                break
            time.sleep(0.02)
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _assert_same_run(run: Path, reference: Path, note: str) -> None:
    a = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    b = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert a["global_step"] == b["global_step"] == 4 * STEPS_PER_EPOCH
    differ = [k for k in b["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"{note}: weights differ from the uninterrupted run in {differ}"
    metrics = [json.loads((d / "summary.json").read_text())["test_metrics"] for d in (run, reference)]
    assert metrics[0] == metrics[1], note


@pytest.fixture(scope="module")
def reference(digits_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The uninterrupted runs: one process with a loader worker, and two processes (gloo)."""
    runs = tmp_path_factory.mktemp("reference")
    run_cli(_args(digits_root, runs, "one", "trainer.devices=1", "data.num_workers=1"), cwd=runs)
    run_cli(_args(digits_root, runs, "two", "trainer.devices=2", "trainer.accelerator=cpu", "data.num_workers=0"), cwd=runs)
    return {"one": runs / "digits" / "one", "two": runs / "digits" / "two"}


def test_loaders_leave_the_global_random_state_alone(digits_root: Path) -> None:
    """Before: every DataLoader iter() drew its worker seed from the global torch RNG (a resumed run makes fewer
    iter() calls), and a decoder's python/numpy draws with num_workers=0 moved the training process's state."""
    m = check_shard_set(digits_root / "train")
    stream = TrainStream(urls=m.urls(digits_root / "train"), counts=[s.count for s in m.shards],
                         decode=lambda s: {"x": torch.rand(1), "y": torch.tensor(random.random() + np.random.rand())},
                         batch_size=8, batches_per_rank=3, seed=0, shuffle_buffer=10)
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    before = rng_state()
    batches = list(StreamLoader(stream, num_workers=0))
    after = rng_state()
    assert len(batches) == 3
    assert torch.equal(before["torch"], after["torch"]) and before["python"] == after["python"]
    assert torch.equal(before["numpy"][1], after["numpy"][1]) and before["numpy"][2] == after["numpy"][2]


def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    torch.save({"rng": [rng_state()]}, tmp_path / "s.ckpt")
    expected = (torch.rand(4), random.random(), np.random.rand())
    set_rng_state(torch.load(tmp_path / "s.ckpt", weights_only=True)["rng"][0])
    assert torch.equal(torch.rand(4), expected[0]) and random.random() == expected[1] and np.random.rand() == expected[2]


def test_sigterm_mid_epoch_and_resume_ends_with_the_uninterrupted_weights(
        reference: dict[str, Path], digits_root: Path, tmp_path: Path) -> None:
    # at least 10 steps before the end: a SIGTERM that lands in the test pass ends the process (nothing to save)
    at = random.Random().choice([s for s in range(5, 4 * STEPS_PER_EPOCH - 10) if s % STEPS_PER_EPOCH])
    args = _args(digits_root, tmp_path, "term", "trainer.devices=1", "data.num_workers=1")
    code = _interrupt(args, tmp_path, tmp_path / "term.err", at, signal.SIGTERM)
    assert code == 3, (tmp_path / "term.err").read_text()[-3000:]
    run = tmp_path / "digits" / "term"
    assert list(run.glob("hpc_ckpt_*.ckpt"))  # stopped mid-epoch with a checkpoint
    run_cli(["fit", str(run)], cwd=tmp_path)
    _assert_same_run(run, reference["one"], f"SIGTERM at step >= {at}")


def test_ddp_fit_killed_three_times_ends_with_the_uninterrupted_weights(
        reference: dict[str, Path], digits_root: Path, tmp_path: Path) -> None:
    """kill -9 of both ranks at a random step of epochs 1, 2 and 3 (after a checkpoint exists), resume each
    time from the newest intact checkpoint; the last resume runs to the end."""
    rng = random.Random()
    kills = [rng.randrange(e * STEPS_PER_EPOCH + 2, (e + 1) * STEPS_PER_EPOCH - 1) for e in (1, 2, 3)]
    run = tmp_path / "digits" / "fault"
    args = _args(digits_root, tmp_path, "fault", "trainer.devices=2", "trainer.accelerator=cpu", "data.num_workers=0")
    for i, at in enumerate(kills):
        log = tmp_path / f"attempt{i}.err"
        code = _interrupt(args if i == 0 else ["fit", str(run)], tmp_path, log, at, signal.SIGKILL)
        assert code == -signal.SIGKILL, f"attempt {i} (kill at step {at}) exited {code}\n{log.read_text()[-3000:]}"
    run_cli(["fit", str(run)], cwd=tmp_path)
    _assert_same_run(run, reference["two"], f"killed at steps {kills}")
