"""Mouse-V1 response predictors (`task: v1`): the LightningModule and the family's entry points.

Training objective per optimizer step, summed over the sessions present in the (mixed) batch, as in
neuralpredictors' standard trainer (Lurz et al. 2021):

    loss = sum_s [sqrt(G * N_s / b_s) * sum_{trials, neurons} NLL(rate, response) + core penalty]
           + sum over all readouts of their penalties

N_s = training trials of session s, b_s = its trials in this rank's batch, G = processes x accumulation (so
that the DDP average equals the one-process objective). The scaling keeps the data term and the penalties
in the balance neuralpredictors' gamma values were tuned for; with k sessions, `data.batch_size` = 128 k
gives every session the 128 trials per step of their trainer. Images of all sessions go through the core
together (one batch-norm batch), each session's readout takes its own trials.

Validation: per-neuron single-trial correlation (streamed, summed across ranks) -> `val/corr` (mean over
all neurons of all sessions; the monitored metric) and `val/corr/<session>`. Test: every trial's prediction
is gathered on every rank; correlation, correlation to the trial average, FEVE and the leave-one-out oracle
per neuron and session (`models/v1/metrics.py`) -> logged means and `test_report()` (per-neuron JSON).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from vislab.core.errors import ConfigError
from vislab.data.manifest import Manifest
from vislab.data.modules import ShardDataModule
from vislab.families.v1 import metrics as M
from vislab.families.v1.data import NeuralDecode, collate_sessions, session_stats
from vislab.families.v1.encoder import Encoder, build_encoder
from vislab.families.v1.readouts import FactorizedReadout, GaussianReadout
from vislab.families.v1.rf_init import EnergyCorrelation, initialize_readout
from vislab.families.v1.schema import V1Config
from vislab.models.base import VislabModule
from vislab.models.figures import log_figure

BUILDER = "v1_encoder"
# a rank that read no trial of a session still takes part in the metric's all-reduce: not a mistake here
warnings.filterwarnings("ignore", message=r".*``compute`` method of metric (CorrelationSums|TrialCollector).*")


# ------------------------------------------------------------------------------------- entry points
def training_meta(cfg: V1Config) -> dict[str, Any]:
    meta = Manifest.load(Path(cfg.data.root) / "train").meta
    if meta.get("family") != "neural":
        raise ConfigError([f"data.root={cfg.data.root}: not neural shards (meta.family={meta.get('family')!r})"])
    return meta


def datamodule(cfg: V1Config) -> ShardDataModule:
    stats = session_stats(training_meta(cfg), cfg.data.normalize_images, cfg.data.normalize_responses)
    decode = NeuralDecode(stats)
    return ShardDataModule(cfg, {"train": decode, "eval": decode}, collate=collate_sessions)


def _backbone_spec(backbone: str) -> dict[str, Any]:
    if Path(backbone).is_dir():
        return json.loads((Path(backbone) / "model.json").read_text())["spec"]
    return {"builder": "create_model", "kwargs": {"name": backbone, "num_classes": 1000}}


def encoder_kwargs(cfg: V1Config, meta: dict[str, Any]) -> dict[str, Any]:
    """Plain-data description of the network (an export's `spec.kwargs`)."""
    m = cfg.model
    if m.core == "stacked":
        core: dict[str, Any] = {"kind": "stacked", "channels": m.channels, "layers": m.layers,
                                "input_kernel": m.input_kernel, "hidden_kernel": m.hidden_kernel,
                                "activation": m.core_activation, "pad_input": m.pad_input,
                                "depth_separable": m.depth_separable, "bn_momentum": m.bn_momentum, "stack": m.stack,
                                "gamma_input": m.gamma_input, "gamma_hidden": m.gamma_hidden, "gamma_center": m.gamma_center,
                                "input_regularizer": m.input_regularizer}
    else:
        core = {"kind": "pretrained", "backbone_spec": _backbone_spec(m.backbone), "layer": m.backbone_layer,
                "frozen": m.backbone_frozen, "activation": m.core_activation}
    if m.readout == "gaussian":
        readout: dict[str, Any] = {"kind": "gaussian", "gamma": m.gamma_readout, "gauss_type": m.gauss_type,
                                   "init_mu_range": m.init_mu_range, "init_sigma": m.init_sigma,
                                   "predictor_hidden_layers": m.predictor_hidden_layers,
                                   "predictor_hidden_features": m.predictor_hidden_features}
    else:
        readout = {"kind": "factorized", "gamma": m.gamma_readout}
    cortex = m.readout == "gaussian" and m.position_predictor == "cortex"
    sessions = {s: {"num_neurons": info["num_neurons"], "image_shape": info["image_shape"],
                    "coordinates_dim": 2 if cortex and info.get("cell_motor_coordinates") else 0}
                for s, info in meta["sessions"].items()}
    return {"core": core, "readout": readout, "sessions": sessions, "output": m.output}


def model_spec(cfg: V1Config, meta: dict[str, Any]) -> dict[str, Any]:
    return {"builder": BUILDER, "kwargs": encoder_kwargs(cfg, meta)}


def export_info(cfg: V1Config, meta: dict[str, Any]) -> dict[str, Any]:
    sessions, start = {}, 0
    stats = session_stats(meta, cfg.data.normalize_images, cfg.data.normalize_responses)
    for s, info in meta["sessions"].items():
        n = int(info["num_neurons"])
        sessions[s] = {"num_neurons": n, "output_slice": [start, start + n], "image_shape": info["image_shape"],
                       "image_mean": stats[s].image_mean, "image_std": stats[s].image_std,
                       "response_std": [round(float(1 / v), 6) for v in stats[s].response_scale],
                       "unit_ids": info.get("unit_ids")}
        start += n
    first = next(iter(meta["sessions"].values()))
    return {
        "architecture": f"v1 {cfg.model.core} core + {cfg.model.readout} readout",
        "input_size": first["image_shape"],
        "preprocess": "per session: (image - image_mean) / image_std, image in 0..255; "
                      "model(images, session) -> rates in units of response_std",
        "sessions": sessions,
        "num_neurons": start,
    }


def example_input(cfg: V1Config, info: dict[str, Any], batch_size: int) -> torch.Tensor:
    """Normalised images of the first validation trials (of one session)."""
    dm = datamodule(cfg)
    batch = next(iter(dm.eval_loader("val" if "val" in dm.dirs else dm.test_split, rank=0, world_size=1)))
    group = next(iter(batch["sessions"].values()))
    return group["images"][:batch_size]


def module(cfg: V1Config, meta: dict[str, Any]) -> V1Module:
    return V1Module(cfg, meta)


# ------------------------------------------------------------------------------------------- module
class V1Module(VislabModule):
    cfg: V1Config

    def __init__(self, cfg: V1Config, meta: dict[str, Any] | None = None):
        super().__init__(cfg, meta)
        meta = self.meta
        kwargs = encoder_kwargs(cfg, meta)
        if cfg.model.core == "pretrained" and Path(cfg.model.backbone).is_dir():
            kwargs["core"]["weights"] = cfg.model.backbone  # training starts from the export's weights
        self.model: Encoder = build_encoder(**kwargs)
        self._initialize(meta)
        self.sessions = list(meta["sessions"])
        self.train_trials = {s: max(1, int(meta["sessions"][s]["num_trials"]["train"])) for s in self.sessions}
        self.val_corr = nn.ModuleDict({s: M.CorrelationSums(meta["sessions"][s]["num_neurons"]) for s in self.sessions})
        self.val_loss = MeanMetric()
        self.test_trials = nn.ModuleDict({s: M.TrialCollector(meta["sessions"][s]["num_neurons"]) for s in self.sessions})
        self._report: dict[str, Any] = {}

    def _val_corr(self, session: str) -> M.CorrelationSums:
        return cast(M.CorrelationSums, self.val_corr[session])

    def _test_trials(self, session: str) -> M.TrialCollector:
        return cast(M.TrialCollector, self.test_trials[session])

    def _initialize(self, meta: dict[str, Any]) -> None:
        """Biases at each neuron's mean response, cortex coordinates for the position predictor."""
        stats = session_stats(meta, self.cfg.data.normalize_images, self.cfg.data.normalize_responses)
        for s, info in meta["sessions"].items():
            if self.cfg.model.bias_init == "mean_response":
                mean = torch.tensor(info["statistics"]["responses"]["mean"]) * torch.from_numpy(stats[s].response_scale)
                self.model.initialize_bias(s, mean.float())
            readout = self.model.readouts[s]
            if isinstance(readout, GaussianReadout) and readout.predictor is not None:
                readout.set_coordinates(torch.tensor(info["cell_motor_coordinates"], dtype=torch.float32))

    def setup(self, stage: str) -> None:
        """Before the first step of a fresh fit: readouts at data-driven RF estimates (same data on every rank)."""
        if stage == "fit" and self.cfg.model.readout_init == "energy" and not getattr(self.trainer, "ckpt_path", None):
            self.initialize_readouts(self.trainer.datamodule)  # type: ignore[attr-defined]

    def initialize_readouts(self, dm: ShardDataModule) -> None:
        wanted = [s for s in self.sessions if getattr(self.model.readouts[s], "mu", True) is not None]
        if not wanted:
            return  # every position comes from the cortex predictor
        need = self.cfg.model.readout_init_trials
        sums = {s: EnergyCorrelation() for s in wanted}
        for batch in dm.eval_loader("train", rank=0, world_size=1):
            for s, g in batch["sessions"].items():
                if s in sums and sums[s].n < need:
                    sums[s].update(g["images"], g["responses"])
            if all(acc.n >= need for acc in sums.values()):
                break
        for s, acc in sums.items():
            if acc.n > 1:
                initialize_readout(self.model, s, acc.maps())

    def forward(self, images: torch.Tensor, session: str | None = None) -> torch.Tensor:
        return self.model(images, session)

    # ----- one pass over a batch grouped by session -----
    def _predict(self, groups: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Rates per session; sessions with equal image shapes share one core pass (one batch-norm batch)."""
        if self.cfg.trainer.channels_last:
            groups = {s: {**g, "images": g["images"].contiguous(memory_format=torch.channels_last)} for s, g in groups.items()}
        shapes = {tuple(g["images"].shape[1:]) for g in groups.values()}
        if len(shapes) != 1:
            return {s: self.model(g["images"], s) for s, g in groups.items()}
        feats = self.model.features(torch.cat([g["images"] for g in groups.values()]))
        sizes = [len(g["images"]) for g in groups.values()]
        return {s: self.model.readout(f, s) for s, f in zip(groups, feats.split(sizes), strict=True)}

    def _nll(self, rates: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        rates = rates.float()
        if self.cfg.model.loss == "poisson":
            return F.poisson_nll_loss(rates, responses, log_input=False, full=False, reduction="sum")
        return F.mse_loss(rates, responses, reduction="sum")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        groups = batch["sessions"]
        rates = self._predict(groups)
        processes = self.trainer.world_size * self.trainer.accumulate_grad_batches
        data = torch.zeros((), device=self.device)
        nll_sum, values = torch.zeros((), device=self.device), 0
        for s, r in rates.items():
            nll = self._nll(r, groups[s]["responses"])
            data = data + math.sqrt(processes * self.train_trials[s] / len(r)) * nll
            nll_sum, values = nll_sum + nll.detach(), values + r.numel()  # no .item(): no GPU sync per step
        # neuralpredictors adds the core penalty with every session's batch of an optimizer step
        reg = self.model.regularizer(core_weight=len(rates))
        # readouts of sessions absent from this rank's batch still take part (DDP expects every gradient)
        idle = [p.sum() for s in self.sessions if s not in rates for p in self.model.readouts[s].parameters()]
        loss = data + reg + (0.0 * torch.stack(idle).sum() if idle else 0.0)
        size = int(batch["size"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/nll", nll_sum / max(1, values), batch_size=size)  # per trial and neuron, unscaled
        self.log("train/regularizer", reg.detach(), batch_size=size)
        if batch.get("skipped"):
            self.log("train/skipped_samples", float(batch["skipped"]), reduce_fx="sum", batch_size=size)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.model.constrain()  # projections (non-negative masks, positions inside the map) after the step

    # ----- validation -----
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        groups = batch["sessions"]
        for s, r in self._predict(groups).items():
            resp = groups[s]["responses"]
            self._val_corr(s).update(r, resp)
            nll = self._nll(r, resp) / r.numel()
            self.val_loss.update(nll, weight=r.numel())

    def on_validation_epoch_end(self) -> None:
        corr = {s: self._val_corr(s).compute() for s in self.sessions}
        values = {f"val/corr/{s}": c.mean() for s, c in corr.items()}
        values["val/loss"] = self.val_loss.compute()
        self.log_dict({k: v.float() for k, v in values.items()}, sync_dist=True)
        # the values are already summed over ranks; sync_dist only keeps Lightning from warning
        self.log("val/corr", torch.cat(list(corr.values())).mean().float(), prog_bar=True, sync_dist=True)
        for s in self.sessions:
            self._val_corr(s).reset()
        self.val_loss.reset()
        every = self.cfg.model.log_images_every_n_epochs
        if not self.trainer.sanity_checking and every > 0 and self.current_epoch % every == 0:
            self.log_pictures()

    def on_train_end(self) -> None:
        self.log_pictures()

    def log_pictures(self) -> None:
        """Readout positions (and masks) and first-layer filters: to wandb, TensorBoard and `<run_dir>/figures/`
        (rank 0 only)."""
        if self.global_rank != 0 or not self.loggers:
            return
        from vislab.families.v1 import figures  # torch and Lightning: kept off the CLI's start-up path

        first = self.model.image_shapes[self.sessions[0]]
        images = {"v1/filters": figures.filter_grid(self.model.core.first_layer_weight()),
                  "v1/positions": figures.position_scatter(
                      {s: self.model.rf_positions(s).numpy() for s in self.sessions}, (first[1], first[2]))}
        for s in self.sessions:
            readout = self.model.readouts[s]
            if isinstance(readout, FactorizedReadout):
                images[f"v1/masks/{s}"] = figures.mask_grid(readout.spatial_maps())
        for key, img in images.items():
            log_figure(self, key, img, step=self.global_step)

    # ----- test -----
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        groups = batch["sessions"]
        for s, r in self._predict(groups).items():
            self._test_trials(s).update(r, groups[s]["responses"], groups[s]["image_id"])

    def on_test_epoch_end(self) -> None:
        report: dict[str, Any] = {"sessions": {}}
        all_neurons: dict[str, list[np.ndarray]] = {}
        for s in self.sessions:
            collector = self._test_trials(s)
            collector.ensure_state()
            data = collector.compute()
            collector.reset()
            if len(data["predictions"]) < 2:
                continue
            per_neuron = M.evaluate_neurons(data["predictions"], data["responses"], data["image_ids"])
            summary = M.summarize(per_neuron)
            summary["num_trials"] = int(len(data["predictions"]))
            summary["num_images"] = int(len(np.unique(data["image_ids"])))
            unit_ids = self.meta["sessions"][s].get("unit_ids")
            summary["per_neuron"] = {"unit_ids": unit_ids, **{k: M.json_list(v) for k, v in per_neuron.items()}}
            report["sessions"][s] = summary
            for k, v in per_neuron.items():
                all_neurons.setdefault(k, []).append(v)
        if all_neurons:
            report["all"] = M.summarize({k: np.concatenate(v) for k, v in all_neurons.items()})
        self._report = report
        logged = {}
        for scope, summary in [("", report.get("all", {})), *((f"/{s}", v) for s, v in report["sessions"].items())]:
            for key in ("corr", "corr_to_average", "oracle", "fraction_of_oracle", "feve", "fev"):
                if summary.get(key) is not None:
                    logged[f"test/{key}{scope}"] = torch.tensor(float(summary[key]))
        self.log_dict(logged, sync_dist=True)

    def test_report(self) -> dict[str, Any]:
        """Per-session and per-neuron test measures (identical on every rank: the trials were gathered)."""
        return self._report

    # ----- checkpoints made for other recordings -----
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("vislab", {}).get("meta", {}).get("sessions", {})
        ours = self.meta["sessions"]
        problems = []
        if saved and set(saved) != set(ours):
            problems.append(f"checkpoint was trained on sessions {sorted(saved)}, data.root has {sorted(ours)}")
        for s in set(saved) & set(ours):
            if saved[s]["num_neurons"] != ours[s]["num_neurons"]:
                problems.append(f"session {s}: checkpoint readout has {saved[s]['num_neurons']} neurons, "
                                f"data.root has {ours[s]['num_neurons']}")
        if problems:
            raise ConfigError(problems)
