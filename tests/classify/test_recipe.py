"""The classifier recipe's options all run together (one process, in this pytest process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO

from vislab.core.config import OptimConfig
from vislab.models.optim import lr_factor
from vislab.train.config import load_config
from vislab.train.run import fit

CFG = REPO / "configs" / "classify" / "digits.yaml"
ONE_PROCESS = ["trainer.devices=1", "data.num_workers=0", "logger.wandb=false", "trainer.progress_bar=none"]


def test_full_recipe_runs_and_ema_is_what_is_saved(digits_root: Path, tmp_path: Path) -> None:
    cfg = load_config(CFG, [
        f"data.root={digits_root}", f"runs_root={tmp_path}", *ONE_PROCESS, "trainer.max_epochs=2",
        "trainer.precision=bf16-mixed", "trainer.channels_last=true", "trainer.accumulate_grad_batches=2",
        "trainer.gradient_clip_val=1.0", "trainer.ema_decay=0.9", "data.mixup_alpha=0.2", "data.cutmix_alpha=1.0",
        "data.randaugment_ops=2", "model.label_smoothing=0.1", "optim.name=sgd", "optim.lr=0.05",
        "optim.scheduler=step", "optim.step_milestones=[1]", "optim.warmup_epochs=0.5",
    ])
    run_dir = fit(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    # data.batch_size is per optimizer step: 40 batches of 32 per epoch, 2 per step
    assert summary["global_step"] == 2 * 20
    ck = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    ema, raw = ck["state_dict"], ck["current_model_state"]  # EMA weights are the checkpoint's weights
    w = "model.classifier.2.weight"
    assert not torch.equal(ema[w], raw[w])
    assert summary["test_metrics"]["test/acc1"] > 0.2
    from vislab.train.run import evaluate

    cfg.ckpt = summary["best_checkpoint"]  # `vislab test` on the same checkpoint evaluates the same (EMA) weights
    assert evaluate(cfg, "test")["test/acc1"] == pytest.approx(summary["test_metrics"]["test/acc1"])


def test_torch_compile_trains(digits_root: Path, tmp_path: Path) -> None:
    cfg = load_config(CFG, [f"data.root={digits_root}", f"runs_root={tmp_path}", *ONE_PROCESS,
                            "trainer.compile=true", "trainer.max_epochs=1", "model.name=tiny_cnn"])
    run_dir = fit(cfg)
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 20


def test_warmup_then_cosine_schedule() -> None:
    cfg = OptimConfig(warmup_epochs=1, warmup_start_factor=0.1, scheduler="cosine", min_lr_factor=0.0)
    f = [lr_factor(s, cfg=cfg, steps_per_epoch=10, total_steps=110) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[5] == pytest.approx(0.55) and f[10] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.5) and f[110] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))


def test_no_weight_decay_on_norms_and_biases() -> None:
    from vislab.models.optim import decay_groups
    from vislab.models.registry import create_model

    groups = {g["name"]: g for g in decay_groups(create_model("resnet18", num_classes=3), 1e-4, True)}
    assert groups["no_decay"]["weight_decay"] == 0.0 and all(p.ndim == 1 for p in groups["no_decay"]["params"])
    assert groups["decay"]["weight_decay"] == 1e-4 and all(p.ndim > 1 for p in groups["decay"]["params"])
