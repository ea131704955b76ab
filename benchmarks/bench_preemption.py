"""Checkpoint at a preemption signal: ResNet-50 (25.5 M parameters, SGD momentum, EMA copy), 2 DDP processes.

A real `vislab fit` (2 CPU processes, gloo) of resnet50 on the digits shards gets SIGUSR1 after a few
steps; at the next optimizer step all ranks vote, rank 0 writes `hpc_ckpt_1.ckpt` and every rank exits
(code 3). Printed, as ratios against named peers measured in the same run:

  save / torch.save   the vislab checkpoint write vs a plain `torch.save` of the same checkpoint dict
                      to the same directory (the floor for writing these bytes)
  save / 90 s         the checkpoint write vs Slurm's warning window (--signal=SIGUSR1@90)
  signal -> exit / 90 s   from the signal to the processes' exit (waits for the next step boundary)

    python benchmarks/bench_preemption.py [--model resnet50] [--workdir /tmp/bench-preempt]
"""

from __future__ import annotations

import argparse
import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "classify" / "digits.yaml"
WINDOW_S = 90.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/bench-preempt"))
    p.add_argument("--steps", type=int, default=3, help="steps trained before the signal")
    a = p.parse_args()

    from vislab.data.importers.digits import write_digits_tree
    from vislab.data.importers.imagefolder import run as shard_imagefolder

    a.workdir.mkdir(parents=True, exist_ok=True)
    shards = a.workdir / "digits"
    if not (shards / "train" / "manifest.json").is_file():
        write_digits_tree(a.workdir / "png")
        shard_imagefolder(a.workdir / "png", shards, shard_size_mb=0.05, workers=1, log=lambda s: None)
    run_id = f"{a.model}-{time.strftime('%H%M%S')}"
    cmd = [sys.executable, "-m", "vislab.train.cli", "fit", str(CONFIG), f"data.root={shards}", f"model.name={a.model}",
           "model.num_classes=1000", "data.grayscale=false", "data.mean=[0.3,0.3,0.3]", "data.std=[0.4,0.4,0.4]",
           "optim.name=sgd", "trainer.ema_decay=0.9998", "data.num_workers=0",
           "trainer.max_epochs=1", "logger.sample_keys=true", "logger.wandb=false", f"run_id={run_id}",
           "trainer.progress_bar=none"]
    proc = subprocess.Popen(cmd, cwd=a.workdir, stderr=subprocess.PIPE, text=True, start_new_session=True)
    run = a.workdir / "runs" / "digits" / run_id
    keys = run / "sample_keys" / "rank0.txt"
    while not (keys.is_file() and len(keys.read_text().splitlines()) >= a.steps):
        if proc.poll() is not None:
            sys.exit(f"training ended early:\n{proc.stderr.read()[-3000:] if proc.stderr else ''}")
        time.sleep(0.2)
    signalled = time.perf_counter()
    proc.send_signal(signal.SIGUSR1)  # our own child: rank 0 (Lightning started rank 1 from it)
    _, err = proc.communicate(timeout=600)
    to_exit = time.perf_counter() - signalled
    m = re.search(r"SIGUSR1 at step (\d+): checkpoint (\S+) written in ([\d.]+) s", err)
    if proc.returncode != 3 or m is None:
        sys.exit(f"expected exit 3 and a checkpoint line, got {proc.returncode}:\n{err[-3000:]}")
    save_s, path = float(m[3]), run / Path(m[2]).name

    ck = torch.load(path, map_location="cpu", weights_only=True)
    params = sum(v.numel() for k, v in ck["state_dict"].items() if v.is_floating_point())
    t0 = time.perf_counter()
    buf = io.BytesIO()
    torch.save(ck, buf)
    (run / "peer.ckpt").write_bytes(buf.getvalue())
    peer_s = time.perf_counter() - t0
    size_mb = path.stat().st_size / 1e6
    print(f"{a.model}: {params / 1e6:.1f} M parameters in state_dict, checkpoint {size_mb:.0f} MB "
          f"(weights + SGD momentum + EMA + loops), 2 processes")
    print(f"save / torch.save        {save_s / peer_s:6.2f}   ({save_s:.2f} s vs {peer_s:.2f} s)")
    print(f"save / {WINDOW_S:.0f} s window       {save_s / WINDOW_S:6.3f}")
    print(f"signal -> exit / {WINDOW_S:.0f} s    {to_exit / WINDOW_S:6.3f}   ({to_exit:.1f} s, incl. the step in flight and teardown)")
    (run / "peer.ckpt").unlink()


if __name__ == "__main__":
    main()
