"""A full disk: checkpoints are written beside their target and renamed, so a full disk costs the new
checkpoint only; `vislab fit` ends with one line naming the file and the free space.

Issue 15 case 6: with a small tmpfs as the runs directory, a raw `OSError 28` traceback and a truncated
last.ckpt (Lightning writes the checkpoint to /tmp and copies it over the target).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli, skip_unless_ci

from vislab.core.checkpoints import is_intact, resume_checkpoint
from vislab.core.errors import DiskFullError
from vislab.train.trainer import AtomicCheckpointIO

CFG = str(REPO / "configs" / "classify" / "digits.yaml")


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    renames: list[tuple[str, str]] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((str(a), str(b))), real_replace(a, b))[1])
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    assert renames and Path(renames[0][0]).parent == target.parent  # staged beside the target: one filesystem
    good = target.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match=rf"disk full: cannot write {target} .* MB free on its filesystem.*"
                                            rf"last good checkpoint: {target}"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}}, target)
    assert target.read_bytes() == good and [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 400 kB tmpfs: room for about three checkpoints of tiny_cnn (94 kB each) and the logs."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        skip_unless_ci(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_fit_on_a_full_disk_ends_with_one_line_and_an_intact_checkpoint(small_disk: Path, digits_root: Path) -> None:
    res = run_cli(["fit", CFG, f"data.root={digits_root}", f"runs_root={small_disk}", "run_id=full", "model.name=tiny_cnn",
                   "trainer.devices=1", "trainer.max_epochs=6", "trainer.save_top_k=-1", "data.num_workers=0",
                   "logger.wandb=false", "trainer.progress_bar=none"], cwd=small_disk, check=False)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "OSError" not in res.stderr, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("vislab: error:")]
    assert len(errors) == 1 and "disk full: cannot write" in errors[0] and "MB free" in errors[0], res.stderr[-3000:]
    assert ".ckpt" in errors[0] and "last good checkpoint:" in errors[0]
    run = small_disk / "digits" / "full"
    newest = resume_checkpoint(run)
    assert newest is not None and is_intact(newest)
    assert torch.load(newest, weights_only=True, map_location="cpu")["global_step"] > 0
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]  # no half-written file left behind
