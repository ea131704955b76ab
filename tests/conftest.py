"""Shared fixtures: tiny shard sets made inside the tests, and running the CLI in a subprocess.

DDP runs go through `vislab fit` in a subprocess (Lightning's `ddp` re-executes the command line for the
other ranks: inside pytest that would re-run pytest). A timed-out child is killed with its process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("VISLAB_RUN_DIR", raising=False)
    yield


def run_cli(args: list[str], *, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `vislab ARGS` in a fresh process group; kill the whole group on timeout."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("VISLAB_RUN_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "vislab.train.cli", *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"vislab {' '.join(args)} timed out after {timeout} s\n{err[-3000:]}") from None
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(f"vislab {' '.join(args)} exited {proc.returncode}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-5000:]}")
    return result


def start_cli(args: list[str], *, cwd: Path, stderr: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start `vislab ARGS` in a fresh process group (signal or kill it with `os.killpg(proc.pid, ...)`, as a
    terminal or Slurm would), its stderr going to a file the test can watch."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("VISLAB_RUN_DIR", None)
    with open(stderr, "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "vislab.train.cli", *args], cwd=cwd, env=full_env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's data: scikit-learn digits as shards with train/val/test (made once per session)."""
    from vislab.data.importers.digits import write_digits_tree
    from vislab.data.importers.imagefolder import run as shard_imagefolder

    base = tmp_path_factory.mktemp("digits")
    write_digits_tree(base / "png")
    shard_imagefolder(base / "png", base / "shards", shard_size_mb=0.02, workers=1, log=lambda s: None)
    return base / "shards"


IN_CI = os.environ.get("VISLAB_CI") == "1"  # set by .ci/run: there, a missing prerequisite is a failure


def skip_unless_ci(reason: str) -> None:
    """Skip on a user's machine that lacks a prerequisite; in CI the same situation fails the test."""
    if IN_CI:
        pytest.fail(f"{reason} (VISLAB_CI=1: CI must provide it)")
    pytest.skip(reason)


def needs_shared(*parts: str) -> Path:
    """Path under ../shared/data, or skip with the reason (a user's fresh clone has no shared data)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        skip_unless_ci(f"{path} not present (real data lives in ../shared/data on the lab machines)")
    return path


# the textures tests' real photos (they ship with scikit-learn), written as files for the CLI
@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("photos")
    found = {}
    data = load_sample_images()
    for name, array in zip(data.filenames, data.images, strict=True):
        stem = Path(name).stem
        Image.fromarray(np.asarray(array)).save(out / f"{stem}.jpg")
        found[stem] = out / f"{stem}.jpg"
    return found
