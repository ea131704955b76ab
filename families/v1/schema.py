"""Schema of the mouse-V1 response predictors (`task: v1`): a shared core, one readout per session.

Defaults are the proven SENSORIUM 2022 baseline of the Sinz lab (neuralpredictors' stacked core with
depth-separable layers + full-Gaussian readout with the cortex position predictor, ELU+1 output, Poisson loss,
their gamma values), for images of 36x64 pixels normalised with the training tier's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vislab.core.config import DataConfig, RunConfig
from vislab.data.manifest import Manifest, check_data_root


@dataclass
class V1DataConfig(DataConfig):
    """Neural shards written by `vislab shard` (static_v1 / neural_arrays importers or `vislab simulate v1`)."""

    batch_size: int = 128
    num_workers: int = 2
    normalize_images: bool = True
    """(image - mean) / std with the session's pixel statistics of the training tier (from the manifest)."""
    normalize_responses: bool = True
    """Divide each neuron's responses by its std over the training tier (neuralpredictors' NeuroNormalizer)."""

@dataclass
class V1ModelConfig:
    """Core x readout. The config keys are flat so that checkpoint checks compare each one separately."""

    core: Literal["stacked", "pretrained"] = "stacked"
    """'stacked': conv-BN-nonlinearity layers (Klindt 2017 / Lurz 2021); 'pretrained': a backbone cut at a layer."""
    channels: int = 64
    layers: int = 4
    input_kernel: int = 9
    hidden_kernel: int = 7
    depth_separable: bool = True
    """Hidden layers as 1x1 -> depthwise kxk -> 1x1 convolutions (the SENSORIUM baseline)."""
    pad_input: bool = False
    """Zero-pad the first convolution ('same'); without padding the feature map loses input_kernel - 1 pixels."""
    core_activation: Literal["elu", "softplus", "relu"] = "elu"
    bn_momentum: float = 0.9
    """torch BatchNorm momentum (weight of the current batch in the running statistics; neuralpredictors: 0.9)."""
    stack: int = -1
    """The readout sees the concatenation of layers[stack:] (-1: the last layer only)."""
    gamma_input: float = 6.3831
    """Laplacian smoothness penalty on the first layer's filters."""
    gamma_hidden: float = 0.0
    """Group-sparsity penalty on the hidden layers' filters (not for depth-separable layers)."""
    gamma_center: float = 0.0
    """Penalty on the distance of every filter's energy centroid from its kernel centre: removes the freedom to
    shift all filters one way and all readout positions the other, so positions are RF centres in pixels."""
    input_regularizer: Literal["laplace_l2norm", "laplace_l2"] = "laplace_l2norm"
    """'laplace_l2norm': |Laplace(w)|^2 / |w|^2 (neuralpredictors); 'laplace_l2': |Laplace(w)|^2 (Klindt 2017)."""
    backbone: str = ""
    """core=pretrained: a registry architecture (`vislab models`) or a vislab export directory (with weights)."""
    backbone_layer: str = ""
    """core=pretrained: the graph node to cut at (torchvision.models.feature_extraction names, e.g. 'layer2')."""
    backbone_frozen: bool = True
    readout: Literal["gaussian", "factorized"] = "gaussian"
    """'gaussian': a learned position per neuron (Lurz 2021); 'factorized': mask x features (Klindt 2017)."""
    gauss_type: Literal["full", "uncorrelated", "isotropic"] = "full"
    init_mu_range: float = 0.3
    """Gaussian readout: initial positions uniform in [-r, r] of the feature map's [-1, 1] extent."""
    init_sigma: float = 0.1
    """Gaussian readout: initial spread of the sampled positions (same units)."""
    gamma_readout: float = 0.0076
    """L1 penalty on the readout (Gaussian: features; factorized: mask x features)."""
    position_predictor: Literal["none", "cortex"] = "cortex"
    """Gaussian readout: predict positions from the neurons' cortical coordinates (falls back to 'none' for a
    session without coordinates)."""
    predictor_hidden_layers: int = 1
    predictor_hidden_features: int = 30
    readout_init: Literal["energy", "random"] = "energy"
    """'energy': start each readout at the peak of the correlation between the neuron's responses and the
    images' local contrast energy (factorized: the mask at that map; cf. Klindt 2017's STA init); 'random':
    uniform positions (Gaussian, `init_mu_range`) / uniform masks. Not used with the cortex predictor."""
    readout_init_trials: int = 2000
    """Training trials per session read for the 'energy' init."""
    bias_init: Literal["mean_response", "zero"] = "mean_response"
    """Start each neuron's bias so that its predicted rate is its mean training response."""
    output: Literal["elu1", "softplus"] = "elu1"
    loss: Literal["poisson", "mse"] = "poisson"
    """Poisson NLL summed over trials and neurons, scaled by sqrt(train trials / batch trials) per session."""
    log_images_every_n_epochs: int = 5
    """Readout positions/masks and first-layer filters to the dashboard every this many epochs (0 = at the end only)."""

@dataclass
class V1Config(RunConfig):
    """A `task: v1` run."""

    data: V1DataConfig = field(default_factory=V1DataConfig)
    model: V1ModelConfig = field(default_factory=V1ModelConfig)


def check(cfg: Any, source: str) -> list[str]:
    """Data root, that it holds neural shards, and what the model asks of them."""

    m = cfg.model
    problems = []
    if m.core == "pretrained":
        if not m.backbone or not m.backbone_layer:
            problems.append(f"{source}: model.core=pretrained needs 'model.backbone' and 'model.backbone_layer'")
        elif not Path(m.backbone).is_dir():
            from vislab.models.registry import (
                unknown_model_message,  # torch and Lightning: kept off the CLI's start-up path
            )

            msg = unknown_model_message(m.backbone)
            if msg:
                problems.append(f"{source}: 'model.backbone': {msg} (or give a vislab export directory)")
    elif m.layers < 1 or m.channels < 1 or m.input_kernel < 1 or m.hidden_kernel < 1:
        problems.append(f"{source}: model.layers, channels, input_kernel and hidden_kernel must be >= 1")
    if not -m.layers <= m.stack < m.layers and m.core == "stacked":
        problems.append(f"{source}: 'model.stack'={m.stack} must index one of the {m.layers} layers")
    root_problems = check_data_root(cfg.data.root, source)
    problems += root_problems
    if root_problems:
        return problems
    meta = Manifest.load(f"{cfg.data.root}/train").meta
    if meta.get("family") != "neural" or not meta.get("sessions"):
        return problems + [f"{source}: 'data.root'={cfg.data.root} holds no neural recordings (meta.family="
                           f"{meta.get('family')!r}); write them with `vislab shard <session folder(s)>`"]
    for name, info in meta["sessions"].items():
        c, h, w = info["image_shape"]
        if m.core == "stacked" and not m.pad_input and (h < m.input_kernel or w < m.input_kernel):
            problems.append(f"{source}: session {name} has {h}x{w} images, smaller than model.input_kernel="
                            f"{m.input_kernel} without padding (set model.pad_input=true)")
        low = min(info["statistics"]["responses"]["min"])
        real = info.get("negative_responses")
        if m.loss == "poisson" and real:
            unit = f" (unit id {real['unit_id']})" if "unit_id" in real else ""
            problems.append(f"{source}: session {name} has negative responses beyond float rounding in {real['neurons']} "
                            f"neuron(s), e.g. trial {real['trial']} neuron {real['neuron']}{unit}: {real['value']:.3g}; "
                            "the Poisson loss needs counts or rates >= 0 (use model.loss=mse)")
        elif m.loss == "poisson" and low < 0:
            problems.append(f"{source}: session {name} has negative responses (min {low:.3g}); the Poisson loss "
                            "needs counts or rates >= 0 (use model.loss=mse; shards written before vislab set float "
                            "rounding to 0: re-run `vislab shard`)")
    return problems
