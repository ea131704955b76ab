"""Shard sets a whole lab can share (issue 14): files written with the writer's umask (not mkstemp's 0600),
a second user verifies and trains from a shard set written by the first, and a file that user may not read
is one line naming it (no traceback).

Across users: the shard set belongs to a second real account (`useradd`) and the reader is root without
capabilities (see below); where the tests do not run as root those are skipped and the file modes are still
checked.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, skip_unless_ci

from vislab.data.features import extract_features
from vislab.data.manifest import MANIFEST, Manifest, ShardError, atomic_write_text
from vislab.data.shards import plan_shards, write_shard_set

OTHER = "vislab-peer"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _tiny_set(out: Path) -> Manifest:
    return write_shard_set(out, plan_shards(list(range(10)), max_count=4), lambda i: {"__key__": f"s{i}", "cls": i},
                           log=lambda s: None)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_write_honours_the_umask(tmp_path: Path, umask_022: None) -> None:
    atomic_write_text(tmp_path / "a.json", "{}")
    assert _mode(tmp_path / "a.json") == 0o644
    os.umask(0o077)  # a private umask stays private
    atomic_write_text(tmp_path / "b.json", "{}")
    assert _mode(tmp_path / "b.json") == 0o600


def test_shards_manifests_and_feature_caches_are_world_readable(tmp_path: Path, umask_022: None) -> None:
    _tiny_set(tmp_path / "data" / "train")
    _tiny_set(tmp_path / "data" / "val")
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert any(p.name == MANIFEST for p in files) and any(p.suffix == ".tar" for p in files)
    assert {p.name: oct(_mode(p)) for p in files if _mode(p) != 0o644} == {}

    def compute(raw: list[dict], split: str) -> list[dict]:
        return [{"__key__": r["__key__"], "cls": int(r["cls"])} for r in raw]

    cache = extract_features(tmp_path / "data", tmp_path / "cache", compute, {"k": 1}, log=lambda s: None)
    modes = {str(p.relative_to(cache)): oct(_mode(p)) for p in cache.rglob("*") if p.is_file()}
    assert modes and all(m == "0o644" for m in modes.values()), modes


def test_an_unreadable_manifest_or_shard_is_one_line_naming_it(tmp_path: Path) -> None:
    """Checked through the error path itself (root reads everything, so the permission is simulated)."""
    _tiny_set(tmp_path / "root" / "train")
    _tiny_set(tmp_path / "root" / "val")
    manifest = tmp_path / "root" / "train" / MANIFEST

    def denied(self: Path, *a: object, **k: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "read_text", denied)
        with pytest.raises(ShardError) as e:
            Manifest.load(manifest.parent)
    line = str(e.value)
    assert "\n" not in line and str(manifest) in line and "permission denied" in line and "chmod -R a+rX" in line


# ------------------------------------------------------------------------- a second user
# The interpreter lives in a folder only root may enter (/root/.pyenv here), so the other account cannot run
# vislab. The roles are swapped instead, with the same kernel checks: the shard set belongs to a second real
# account (`useradd`), and the reader is root without any capability (setpriv drops CAP_DAC_OVERRIDE and
# the rest), so for it the files' "other" permission bits decide, as for any other user of a shared /data.
def _owner_account() -> pwd.struct_passwd:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        skip_unless_ci("needs root and setpriv (file modes are checked above)")
    try:
        return pwd.getpwnam(OTHER)
    except KeyError:
        if shutil.which("useradd") is None:
            skip_unless_ci("no useradd on this machine")
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER], check=True)
        return pwd.getpwnam(OTHER)


def _unprivileged(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "VISLAB_PROGRESS": "text", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("VISLAB_RUN_DIR", None)
    return subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m",
                           "vislab.train.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def shared(digits_root: Path) -> Iterator[Path]:
    """/tmp/<x>/data: the digits shard set written with umask 022 and handed to the other account."""
    owner = _owner_account()
    base = Path(tempfile.mkdtemp(prefix="vislab-shared-"))
    base.chmod(0o755)
    old = os.umask(0o022)
    try:
        for split in ("train", "val", "test"):  # the shards copied, the manifest written anew with this umask
            m = Manifest.load(digits_root / split)
            shutil.copytree(digits_root / split, base / "data" / split, copy_function=_copy_with_umask)
            m.save(base / "data" / split)
    finally:
        os.umask(old)
    for p in [base / "data", *(base / "data").rglob("*")]:
        os.chown(p, owner.pw_uid, owner.pw_gid)
    (base / "work").mkdir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _copy_with_umask(src: str, dst: str) -> str:
    """A copy whose mode comes from the umask (as a writer's new file would), not from the source file."""
    Path(dst).write_bytes(Path(src).read_bytes())
    return dst


def test_a_second_user_verifies_and_trains_from_shards_of_the_first(shared: Path) -> None:
    work = shared / "work"
    verify = _unprivileged(["shard", "verify", str(shared / "data")], cwd=work)
    assert verify.returncode == 0, verify.stderr[-3000:]
    assert verify.stdout.count(": ok") == 3
    fit = _unprivileged(["fit", str(REPO / "configs" / "classify" / "digits.yaml"), f"data.root={shared / 'data'}",
                         f"runs_root={work / 'runs'}", "model.name=tiny_cnn", "trainer.devices=1", "data.batch_size=32",
                         "trainer.max_epochs=1", "data.num_workers=0", "logger.wandb=false", "logger.tensorboard=false",
                         "trainer.progress_bar=none", "data.limit_train_samples=256"], cwd=work, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run_dir = work / fit.stdout.strip().splitlines()[-1]
    assert json.loads((run_dir / "summary.json").read_text())["test_metrics"]


def test_a_manifest_the_second_user_may_not_read_is_one_line(shared: Path) -> None:
    manifest = shared / "data" / "val" / MANIFEST
    manifest.chmod(0o600)  # what mkstemp used to leave behind
    out = _unprivileged(["shard", "verify", str(shared / "data" / "val")], cwd=shared / "work")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(manifest) in lines[0] and "permission denied" in lines[0], out.stderr
    assert f"owner: {OTHER}" in lines[0]
    fit = _unprivileged(["fit", str(REPO / "configs" / "classify" / "digits.yaml"), f"data.root={shared / 'data'}",
                         "model.name=tiny_cnn", "trainer.devices=1"], cwd=shared / "work")
    assert fit.returncode == 2 and "Traceback" not in fit.stderr and str(manifest) in fit.stderr, fit.stderr
