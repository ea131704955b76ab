"""Inference speed of one exported network on CPU: PyTorch eager vs TorchScript vs onnxruntime.

The network (default: EfficientNet-Lite0 with its offline ImageNet weights, or any export directory) is
written with `vislab.train.export.write_format` exactly as `vislab export --format torchscript,onnx`
writes it, loaded back as a consumer would, checked to agree, and timed on the same batches with the same
number of threads (onnxruntime's intra-op threads = torch's). Ratios are against PyTorch eager in the
same run; absolute numbers on a shared machine are noise.

    python benchmarks/bench_export.py [--export DIR] [--batch-sizes 1,8] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of `fn()` after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def network(export: Path | None) -> tuple[torch.nn.Module, list[int], str]:
    if export is not None:
        from vislab.models.exported import load_exported

        model, info = load_exported(export)
        return model, info["input_size"], str(export)
    from vislab.models.backbones import load_backbone

    bb = load_backbone("efficientnet_lite0")
    return bb.eval(), [3, 224, 224], "efficientnet_lite0 (ImageNet head)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, default=None, help="an export directory (default: EfficientNet-Lite0)")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    import onnxruntime as ort

    from vislab.train.export import write_format

    model, size, name = network(a.export)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        out = Path(tmp)
        example = torch.randn(2, *size)
        write_format("torchscript", model, out, example)
        write_format("onnx", model, out, example)
        scripted = torch.jit.load(str(out / "model.ts")).eval()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(out / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        print(f"{name}, input {size}, {threads} threads (torch and onnxruntime), median of {a.repeats}")
        for bs in (int(b) for b in a.batch_sizes.split(",")):
            x = torch.randn(bs, *size, generator=torch.Generator().manual_seed(bs))
            xn = x.numpy()
            with torch.inference_mode():
                ref = model(x)
                diff_ts = float((scripted(x) - ref).abs().max())
                eager = timed(lambda x=x: model(x), a.repeats)
                script = timed(lambda x=x: scripted(x), a.repeats)
            diff_ort = float(np.abs(session.run(None, {"input": xn})[0] - ref.numpy()).max())
            onnx = timed(lambda xn=xn: session.run(None, {"input": xn}), a.repeats)
            print(f"  batch {bs:3d}: eager {bs / eager:7.1f} img/s | torchscript {bs / script:7.1f} img/s "
                  f"({eager / script:.2f}x) | onnxruntime {bs / onnx:7.1f} img/s ({eager / onnx:.2f}x) "
                  f"| max abs diff ts {diff_ts:.1e} ort {diff_ort:.1e}")


if __name__ == "__main__":
    main()
