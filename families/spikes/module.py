"""Calcium spike inference (`task: spikes`): data module, LightningModule and export hooks.

Training streams noise-matched, rate-augmented crops of every selected dataset (data/spike_samples.py),
re-weighted between datasets by `data.dataset_balance`; the network (CNN or STM) runs fully convolutionally
over each crop and is fit by MSE against the smoothed counts or by Poisson likelihood of the raw counts.
Validation and test run the same inference pipeline as `vislab infer` on whole recordings at their own
frame rate and score them per neuron at 25 Hz (models/spike_metrics.py); the per-neuron sums are gathered
across ranks, so every rank logs and reports the same numbers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from vislab.data.manifest import Manifest
from vislab.data.modules import ShardDataModule
from vislab.families.spikes.calcium import resample_trace
from vislab.families.spikes.figures import traces_figure
from vislab.families.spikes.inference import SpikeNet, infer
from vislab.families.spikes.metrics import merge, recording_stats, report
from vislab.families.spikes.networks import SpikeCNN, conditions, net_input, receptive_field
from vislab.families.spikes.samples import PieceDecode, RecordingDecode, collate_recordings
from vislab.families.spikes.schema import SpikesConfig
from vislab.families.spikes.simulate import ensure_simulated_root
from vislab.families.spikes.stm import STM
from vislab.models.base import VislabModule
from vislab.models.exported import build_from_spec
from vislab.models.figures import log_figure

EXAMPLES = 3
"""Validation recordings drawn per epoch (dF/F, inferred rate, true spikes)."""


# ------------------------------------------------------------------------------------------------ data
def collate_calcium(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Training crops stack into tensors; whole recordings (numpy, any length) stay a list."""
    return collate_recordings(samples) if isinstance(samples[0]["trace"], np.ndarray) else default_collate(samples)


def training_datasets(cfg: SpikesConfig, meta: dict[str, Any]) -> list[str]:
    names = cfg.data.datasets or sorted(meta.get("datasets", {}))
    return [n for n in names if n not in cfg.data.exclude_datasets]


def select_shards(m: Manifest, keep: set[str], balance: float | None = None) -> Manifest:
    """The manifest restricted to shards of `keep`; with `balance`, shards of smaller datasets are listed
    (n_max / n_d)^balance times, so the training stream, which draws listed shards uniformly, draws dataset
    d with probability proportional to n_d^(1 - balance)."""
    shard_ds = m.meta.get("shard_datasets", {})
    shards = [s for s in m.shards if shard_ds.get(s.name) in keep]
    count = sum(s.count for s in shards)
    if balance:
        sizes = {d: sum(s.count for s in shards if shard_ds[s.name] == d) for d in keep}
        largest = max(sizes.values(), default=1)
        shards = [s for s in shards for _ in range(max(1, round((largest / max(1, sizes[shard_ds[s.name]])) ** balance)))]
    return dataclasses.replace(m, shards=shards, num_samples=count)


class CalciumDataModule(ShardDataModule):
    """The shared shard reader over the selected datasets of a calcium data root."""

    cfg: SpikesConfig

    def __init__(self, cfg: SpikesConfig, decode: dict[str, Any]):
        super().__init__(cfg, decode, collate=collate_calcium)
        d = cfg.data
        base_meta = self.manifests["train"].meta
        self.train_datasets = training_datasets(cfg, base_meta)
        self.test_datasets = d.test_datasets or sorted(base_meta.get("datasets", {}))
        keep = {"train": set(self.train_datasets), "val": set(self.train_datasets), "test": set(self.test_datasets)}
        for split, m in list(self.manifests.items()):
            self.manifests[split] = select_shards(m, keep[split], d.dataset_balance if split == "train" else None)

    @property
    def meta(self) -> dict[str, Any]:
        """The manifest's facts plus what the model is trained for (saved in checkpoints, read by infer)."""
        base = dict(self.manifests["train"].meta)
        d = self.cfg.data
        infos = [base["datasets"][n] for n in self.train_datasets]
        native = [r for i in infos for r in i["frame_rate_range"]]
        nus = [v for i in infos if i.get("noise_level_range") for v in i["noise_level_range"]]
        base["training"] = {
            "model_rate": d.frame_rate,
            "datasets": self.train_datasets,
            "rate_range": [min([*native, d.rate_min] if d.rate_augment > 0 else native), max(native)],
            "noise_range": [min([*nus, d.noise_min]) if nus else d.noise_min, max([*nus, d.noise_max])],
        }
        return base


def window_of(cfg: SpikesConfig) -> int:
    m = cfg.model
    return receptive_field(m.kernel_sizes) if m.name == "cnn" else m.stm_window


def datamodule(cfg: SpikesConfig) -> CalciumDataModule:
    d = cfg.data
    if d.simulate.enabled:

        ensure_simulated_root(d.simulate, Path(d.root))
    train = PieceDecode(model_rate=d.frame_rate, window=window_of(cfg), segment_frames=d.segment_frames,
                        smoothing_s=d.smoothing_s, noise_min=d.noise_min, noise_max=d.noise_max,
                        shot_noise=d.shot_noise, rate_augment=d.rate_augment, rate_min=d.rate_min)
    return CalciumDataModule(cfg, {"train": train, "eval": RecordingDecode()})


# ----------------------------------------------------------------------------------------- the model
def model_spec(cfg: SpikesConfig, meta: dict[str, Any]) -> dict[str, Any]:
    m = cfg.model
    if m.name == "stm":
        return {"builder": "stm",
                "kwargs": {"window": m.stm_window, "components": m.stm_components, "features": m.stm_features,
                           "ensemble_size": m.ensemble_size, "conditioned": m.conditioned}}
    return {"builder": "spike_cnn",
            "kwargs": {"filters": list(m.filters), "kernel_sizes": list(m.kernel_sizes), "dense": m.dense,
                       "ensemble_size": m.ensemble_size, "conditioned": m.conditioned,
                       "output": "softplus" if m.loss == "poisson" else "linear"}}


def bare_model(cfg: SpikesConfig, meta: dict[str, Any]) -> SpikeNet:
    net = build_from_spec(model_spec(cfg, meta))
    assert isinstance(net, SpikeCNN | STM)
    return net


def export_info(cfg: SpikesConfig, meta: dict[str, Any]) -> dict[str, Any]:
    net = bare_model(cfg, meta)
    return {
        "architecture": cfg.model.name,
        "model_rate": cfg.data.frame_rate,
        "receptive_field": net.receptive_field,
        "centre": net.centre,
        "ensemble_size": cfg.model.ensemble_size,
        "conditioned": cfg.model.conditioned,
        "input_size": [net.in_channels, 4 * net.receptive_field],
        "inputs": "(B, C, T) at model_rate: dF/F, then (if conditioned) log noise level and log(frame rate / model_rate)",
        "output": "(B, ensemble_size, T - receptive_field + 1) spikes per model frame; output i is input frame i + centre",
        "training": meta.get("training", {}),
    }


def example_input(cfg: SpikesConfig, info: dict[str, Any], batch_size: int) -> torch.Tensor:
    """The first evaluation recordings at the model's rate, conditioned as inference does."""

    dm = datamodule(cfg)
    split = "val" if "val" in dm.dirs else dm.test_split
    recs = next(iter(dm.eval_loader(split, rank=0, world_size=1)))["recordings"][:batch_size]
    xs = [resample_trace(r["trace"], r["frame_rate"], cfg.data.frame_rate) for r in recs]
    length = min(min(len(x) for x in xs), 1024)
    trace = torch.tensor(np.stack([x[:length] for x in xs]), dtype=torch.float32)
    cond = conditions(torch.tensor([r["noise_level"] for r in recs]), torch.tensor([r["frame_rate"] for r in recs]),
                      cfg.data.frame_rate) if cfg.model.conditioned else None
    return net_input(trace, cond)


def module(cfg: SpikesConfig, meta: dict[str, Any]) -> SpikeModule:
    return SpikeModule(cfg, meta)


def seen_neurons(meta: dict[str, Any]) -> set[tuple[str, str]]:
    """(dataset, neuron) pairs the model trained on."""
    datasets = meta.get("datasets", {})
    return {(d, n) for d in meta.get("training", {}).get("datasets", []) for n in datasets.get(d, {}).get("train_neurons", [])}


class SpikeModule(VislabModule):
    model: SpikeNet
    cfg: SpikesConfig

    def __init__(self, cfg: SpikesConfig, meta: dict[str, Any] | None = None):
        super().__init__(cfg, meta)
        self.model = bare_model(cfg, self.meta)
        self._stats: dict[tuple[str, str], dict[str, Any]] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self._examples: list[dict[str, Any]] = []
        """The first validation recordings of this rank, drawn as `val/spikes` at the epoch's end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_trace(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        cond = conditions(batch["cond"][:, 0], batch["cond"][:, 1], self.cfg.data.frame_rate) if self.model.conditioned else None
        out = self(net_input(batch["trace"], cond))  # (B, E, segment)
        mask = batch["mask"].unsqueeze(1).expand_as(out)
        if self.cfg.model.loss == "poisson":
            per_frame = F.poisson_nll_loss(out, batch["counts"].unsqueeze(1).expand_as(out), log_input=False,
                                           full=False, reduction="none")
        else:
            per_frame = (out - batch["target"].unsqueeze(1)) ** 2
        loss = (per_frame * mask).sum() / mask.sum().clamp(min=1.0)  # mean over members and valid frames
        self.log("train/loss", loss, prog_bar=True)
        if batch.get("skipped"):
            self.log("train/skipped_samples", float(batch["skipped"]), reduce_fx="sum")
        return loss

    # ----- evaluation: the inference pipeline on whole recordings, scored per neuron -----
    def _eval_step(self, batch: dict[str, Any], split: str) -> None:
        for rec in batch["recordings"]:
            # the DataLoader turns numpy arrays into tensors; the inference pipeline works on numpy
            rec = {**rec, "trace": np.asarray(rec["trace"], dtype=np.float64), "spikes": np.asarray(rec["spikes"])}
            trace = rec["trace"][None]
            pred = infer(self.model, trace, float(rec["frame_rate"]), self.cfg.data.frame_rate,
                         noise_levels=np.array([rec["noise_level"]]), members=True)[0]  # (1 + E, T)
            key = (rec["dataset"], rec["neuron"])
            self._stats[key] = merge(self._stats.get(key), recording_stats(pred, rec, self.cfg.data.eval_bin_s))
            if split == "val" and len(self._examples) < EXAMPLES:
                self._examples.append({"trace": rec["trace"], "rate": pred[0], "frame_rate": float(rec["frame_rate"]),
                                       "spikes": rec["spikes"], "label": f"{rec['dataset']}\n{rec['neuron']}"})

    def _gather(self) -> dict[tuple[str, str], dict[str, Any]]:
        stats, self._stats = self._stats, {}
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return stats
        parts: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, stats)
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for part in parts:
            for key, s in part.items():
                merged[key] = merge(merged.get(key), s)
        return merged

    def _eval_epoch_end(self, split: str) -> None:
        rep = report(self._gather(), seen_neurons(self.meta), self.cfg.data.eval_bin_s)
        self.reports[split] = rep
        self.log_metric_dict({f"{split}/{k}": rep[k] for k in ("corr", "corr_member", "error", "bias", "corr_neurons")},
                             prog_bar=split == "val", sync_dist=True)
        examples, self._examples = self._examples, []
        if examples and not self.trainer.sanity_checking and self.global_rank == 0 and self.loggers:
            fig = traces_figure([e["trace"] for e in examples], [e["rate"] for e in examples],
                                [e["frame_rate"] for e in examples], [e["label"] for e in examples],
                                truth=[e["spikes"] for e in examples], seconds=30.0,
                                title=f"validation: dF/F, inferred rate (red), true spikes (ticks); step {self.global_step}")
            log_figure(self, "val/spikes", fig, step=self.global_step)

    def test_report(self) -> dict[str, Any]:
        """Per dataset and neuron scores of the last test (identical on every rank: built from gathered sums)."""
        return self.reports.get("test", {})
