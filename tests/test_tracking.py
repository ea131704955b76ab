"""wandb goes offline by itself, fast, when it has no key or no server; the run id lives in the run dir."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vislab.core.config import RunConfig
from vislab.core.errors import ConfigError
from vislab.train.tracking import resolve_mode, wandb_id


def test_no_api_key_means_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert resolve_mode(RunConfig()) == ("offline", "no wandb API key")


def test_key_without_network_is_offline_within_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    # with a key and no server wandb itself waits ~100 s and raises; we decide before touching it
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    t0 = time.perf_counter()
    assert resolve_mode(RunConfig()) == ("offline", "wandb server unreachable")
    assert time.perf_counter() - t0 < 5


def test_explicit_choices_win(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RunConfig()
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(cfg)[0] == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    cfg.logger.mode = "offline"
    assert resolve_mode(cfg)[0] == "offline"
    cfg.logger.wandb = False
    assert resolve_mode(cfg)[0] == "disabled"


def test_wandb_id_is_created_once(tmp_path: Path) -> None:
    first = wandb_id(tmp_path)
    assert len(first) == 12 and wandb_id(tmp_path) == first


def test_online_without_a_server_is_an_error_unless_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: decided in < 3 s, no hang
    cfg = RunConfig()
    cfg.logger.mode = "online"
    with pytest.raises(ConfigError, match="'logger.mode'=online: wandb server unreachable"):
        resolve_mode(cfg)
    cfg.logger.fallback_offline = True
    with pytest.warns(UserWarning, match="logging OFFLINE"):
        assert resolve_mode(cfg) == ("offline", "wandb server unreachable")
