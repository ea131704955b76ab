"""Exports written before the family layout (commit 53fffec) still load and predict the same numbers.

The fixtures (tests/fixtures/exports_v0/, see its README) were made by the old code: their model.json names
the builder by its old module path, which today's code resolves through `ALIASES` in models/registry.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "exports_v0"
OLD_BUILDERS = {
    "classify_tiny": "vislab.models.registry:create_model",
    "spikes_tiny": "vislab.models.spikes:build_spike_cnn",
}


def _predict(model: torch.nn.Module, directory: Path) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(np.load(directory / "input.npy"))
    with torch.no_grad():
        got = model(x).numpy()
    return got, np.load(directory / "expected.npy")


def _assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))  # export's own tolerance: 1e-6 relative to max(1, |output|)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("name", sorted(OLD_BUILDERS))
def test_old_export_loads_and_predicts_the_same(name: str) -> None:
    from vislab import load_exported

    d = FIXTURES / name
    stored = json.loads((d / "model.json").read_text())
    assert stored["spec"]["builder"] == OLD_BUILDERS[name]  # an old module path: the alias is what resolves it
    assert stored["git_commit"].startswith("53fffec")

    model, info = load_exported(d)
    assert not model.training
    assert info["spec"]["builder"] == OLD_BUILDERS[name]
    _assert_same(*_predict(model, d))


def test_shared_builder_loads_through_models_exported() -> None:
    """`create_model` is a shared builder: vislab.models.exported loads it without the families' builders.

    In a fresh process, since `vislab.load_exported` in this one may have registered every family already."""
    code = (
        "import sys, numpy as np, torch\n"
        "from pathlib import Path\n"
        "from vislab.models.exported import load_exported\n"
        "d = Path(sys.argv[1])\n"
        "model, info = load_exported(d)\n"
        "assert not any(m.startswith('vislab.families.spikes') for m in sys.modules), 'families were imported'\n"
        "with torch.no_grad():\n"
        "    got = model(torch.from_numpy(np.load(d / 'input.npy'))).numpy()\n"
        "np.testing.assert_allclose(got, np.load(d / 'expected.npy'), rtol=0, atol=1e-6)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(FIXTURES / "classify_tiny")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")

    # and in this process too
    from vislab.models.exported import load_exported

    model, _ = load_exported(FIXTURES / "classify_tiny")
    _assert_same(*_predict(model, FIXTURES / "classify_tiny"))


def test_unknown_builder_is_a_value_error_naming_it(tmp_path: Path) -> None:
    from vislab import load_exported

    d = tmp_path / "export"
    d.mkdir()
    info = json.loads((FIXTURES / "classify_tiny" / "model.json").read_text())
    info["spec"]["builder"] = "vislab.models.gone:build_nothing"
    (d / "model.json").write_text(json.dumps(info))
    (d / "model.safetensors").write_bytes((FIXTURES / "classify_tiny" / "model.safetensors").read_bytes())

    with pytest.raises(ValueError, match="vislab.models.gone:build_nothing"):
        load_exported(d)
