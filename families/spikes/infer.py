"""`vislab infer MODEL TRACES --frame-rate F --out spikes.npy`: spike rates for a user's recording.

MODEL is a spikes run directory (its best checkpoint), a .ckpt, or an export directory (model.json).
TRACES is (num_neurons, T) dF/F at the recording's own frame rate (.npy, .h5/.hdf5 with --key, .csv with
one column per neuron, .mat). The output has the same shape, in spikes per frame, NaN where the window is
incomplete; beside it: a PNG of a few neurons with their inferred rates and a JSON of the noise levels and
warnings. Each neuron's noise level is estimated (CASCADE's nu); a frame rate or noise level outside what
the model was trained for is a warning naming both.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vislab.core.config import from_dict
from vislab.core.errors import ConfigError
from vislab.core.progress import Progress
from vislab.families.spikes.calcium import noise_level
from vislab.families.spikes.figures import traces_figure
from vislab.families.spikes.importers.spikefinder import CsvHeader
from vislab.families.spikes.schema import SpikesConfig
from vislab.families.spikes.traces import describe_gaps, read_traces


def load_spike_model(source: Path) -> tuple[Any, dict[str, Any]]:
    """(network in eval mode, facts: model_rate, training ranges, where it came from)."""
    # torch, and registers the spikes builders that exports name: only once traces are to be inferred
    from vislab.families.spikes.module import model_spec
    from vislab.models.exported import (  # torch and Lightning: kept off the CLI's start-up path
        MODEL_JSON,
        load_exported,
        network_from_checkpoint,
    )

    if source.is_dir() and (source / MODEL_JSON).is_file():
        net, info = load_exported(source)
        if info.get("task") != "spikes":
            raise ConfigError([f"{source}: an export of task '{info.get('task')}', not a spikes model"])
        return net, {"model_rate": info["model_rate"], "training": info.get("training", {}), "source": str(source)}
    def spikes_spec(config: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        if config.get("task") != "spikes":
            raise ConfigError([f"{source}: a checkpoint of task '{config.get('task')}', not a spikes model"])
        return model_spec(spikes_config(config), meta)

    ck = network_from_checkpoint(source, spikes_spec)
    return ck.model, {"model_rate": spikes_config(ck.config).data.frame_rate, "training": ck.meta.get("training", {}),
                      "source": str(ck.path)}


def spikes_config(config: dict[str, Any]) -> SpikesConfig:
    cfg = from_dict(config, SpikesConfig)
    assert isinstance(cfg, SpikesConfig)
    return cfg


def applicability(frame_rate: float, nu: np.ndarray, info: dict[str, Any], path: Path) -> list[str]:
    """Warnings when the recording lies outside what the model was trained for."""
    out = []
    training, model_rate = info.get("training", {}), info["model_rate"]
    lo, hi = training.get("rate_range", [model_rate, model_rate])
    if not lo / 1.25 <= frame_rate <= hi * 1.25:
        out.append(f"{path}: frame rate {frame_rate:g} Hz is far outside the rates the model was trained for "
                   f"({lo:.3g}-{hi:.3g} Hz, model rate {model_rate:g} Hz); predictions may be unreliable")
    nlo, nhi = training.get("noise_range", [0.0, math.inf])
    bad = [(i, v) for i, v in enumerate(nu) if np.isfinite(v) and not nlo / 1.25 <= v <= nhi * 1.25]
    if bad:
        listed = ", ".join(f"neuron {i} (nu {v:.2f})" for i, v in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        out.append(f"{path}: {len(bad)} neuron(s) have a noise level outside the model's training range "
                   f"({nlo:.2f}-{nhi:.2f} % Hz^-1/2): {listed}")
    return out


def plot_traces(traces: np.ndarray, spikes: np.ndarray, frame_rate: float, out: Path, count: int = 6,
                seconds: float = 60.0) -> Path:
    """PNG of up to `count` neurons (the most active ones): dF/F above, inferred spike rate below."""
    activity = np.nan_to_num(np.nanmean(spikes, axis=1), nan=-1.0) if np.isfinite(spikes).any() else np.zeros(len(spikes))
    chosen = sorted(np.argsort(-activity)[:count])
    frames = min(traces.shape[1], int(seconds * frame_rate))
    fig = traces_figure([traces[i] for i in chosen], [spikes[i] for i in chosen], [frame_rate] * len(chosen),
                        [f"neuron {i}" for i in chosen], seconds=seconds,
                        title=f"inferred spike rates (first {frames / frame_rate:.0f} s at {frame_rate:g} Hz)")
    fig.savefig(out, dpi=100)
    import matplotlib.pyplot as plt  # matplotlib: only when a figure is drawn

    plt.close(fig)
    return out


def check_output(out: Path, traces_path: Path) -> None:
    """The output is one new .npy (+ .png and .json beside it), never the input and never a folder."""
    if out.is_dir():
        raise ConfigError([f"--out {out} is a directory; name the output file, e.g. {out / 'spikes.npy'}"])
    if out.suffix.lower() != ".npy":
        raise ConfigError([f"--out {out} must end with .npy (the spike rates; a .png and a .json go beside it)"])
    written = {p.resolve() for p in (out, out.with_suffix(".png"), out.with_suffix(".json"))}
    if traces_path.resolve() in written:
        raise ConfigError([f"--out {out} would overwrite the input {traces_path}; choose another output name"])


def run_infer(model: Path, traces_path: Path, frame_rate: float, out: Path, *, key: str | None = None,
              transpose: bool = False, mode: str = "trace", plot: bool = True,
              csv_header: CsvHeader = "auto") -> dict[str, Any]:
    from vislab.families.spikes.inference import (  # torch and Lightning: kept off the CLI's start-up path
        infer,
        min_frames,
    )

    if not (math.isfinite(frame_rate) and frame_rate > 0):
        raise ConfigError([f"--frame-rate must be a positive, finite number of Hz, got {frame_rate}"])
    check_output(out, traces_path)
    # before loading torch and the model
    traces = read_traces(traces_path, key=key, transpose=transpose, csv_header=csv_header)
    net, info = load_spike_model(model)
    nu = noise_level(traces, frame_rate)
    problems = describe_gaps(traces, traces_path, min_frames(net, frame_rate, info["model_rate"]))
    problems += applicability(frame_rate, nu, info, traces_path)
    for msg in problems:
        warnings.warn(msg, stacklevel=2)
    t0 = time.time()
    with Progress(None, f"infer {traces_path.name}", "frames") as progress:
        spikes = infer(net, traces, frame_rate, info["model_rate"], noise_levels=nu, mode=mode,  # type: ignore[arg-type]
                       progress=progress)
    seconds = time.time() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, spikes.astype(np.float32))
    facts = {
        "input": str(traces_path), "output": str(out), "shape": list(spikes.shape), "frame_rate": frame_rate,
        "model": info["source"], "model_rate": info["model_rate"], "units": "spikes per frame (NaN: incomplete window)",
        "noise_levels": [None if not np.isfinite(v) else round(float(v), 4) for v in nu],
        "warnings": problems, "seconds": round(seconds, 3),
        "frames_per_s": round(spikes.size / max(seconds, 1e-9)),
    }
    if plot:
        facts["plot"] = str(plot_traces(traces, spikes, frame_rate, out.with_suffix(".png")))
    out.with_suffix(".json").write_text(json.dumps(facts, indent=1))
    return facts


def cmd_infer(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vislab infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="spikes run directory, .ckpt, or export directory")
    p.add_argument("traces", type=Path, help="(num_neurons, T) dF/F: .npy, .h5/.hdf5, .csv (columns = neurons), .mat")
    p.add_argument("--frame-rate", type=float, required=True, help="the recording's frame rate (Hz)")
    p.add_argument("--out", type=Path, required=True, help="output .npy (a .png and a .json are written beside it)")
    p.add_argument("--key", help="array name inside an HDF5 or MATLAB file")
    p.add_argument("--transpose", action="store_true", help="the array is (T, num_neurons)")
    p.add_argument("--csv-header", choices=["auto", "yes", "no"], default="auto",
                   help="does a CSV's first row hold column names / neuron ids? auto: names, or distinct whole "
                        "numbers above fractional dF/F (said on stderr when it decides so)")
    p.add_argument("--mode", choices=["trace", "window"], default="trace",
                   help="fully convolutional (default) or window-by-window execution (same numbers, slower)")
    p.add_argument("--no-plot", action="store_true")
    a = p.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.formatwarning = lambda msg, *args, **kw: f"vislab: warning: {msg}\n"  # type: ignore[assignment]
        facts = run_infer(a.model, a.traces, a.frame_rate, a.out, key=a.key, transpose=a.transpose, mode=a.mode,
                          plot=not a.no_plot, csv_header=a.csv_header)
    nus = [v for v in facts["noise_levels"] if v is not None]
    print(f"{facts['output']}: {facts['shape'][0]} neurons x {facts['shape'][1]} frames, spikes per frame "
          f"(noise level nu median {np.median(nus) if nus else float('nan'):.2f}, "
          f"{facts['frames_per_s']:,} frames/s){'; plot ' + facts['plot'] if 'plot' in facts else ''}",
          file=sys.stdout)
    return 0
