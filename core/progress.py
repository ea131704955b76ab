"""Progress of a long job: a tqdm bar on a terminal, a plain line every so often in a log file (Slurm).

    with Progress(total=len(items), desc="shard train", unit="samples") as progress:
        for item in items:
            ...
            progress.update(1)

Not a terminal (a Slurm log, a pipe): one line on stderr every `every_s` seconds (environment variable
`VISLAB_PROGRESS_S`, default 30) and one at the end, with the count, the total, the rate and the time left:

    [shard train] 1,200/9,469 samples (13%) 412 samples/s, 20 s left

`VISLAB_PROGRESS=bar|text|none` forces a mode (`none` silences it). Used by `vislab shard`, feature
extraction, `vislab infer`, `vislab crossval`, and the robustness and texture jobs.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any, Literal, TextIO

Mode = Literal["auto", "bar", "text", "none"]
DEFAULT_EVERY_S = 30.0


def _mode(mode: Mode, stream: TextIO) -> str:
    env = os.environ.get("VISLAB_PROGRESS", "")
    if env == "none":
        return "none"
    if mode == "auto" and env in ("bar", "text"):
        mode = env  # type: ignore[assignment]
    if mode == "auto":
        return "bar" if stream.isatty() else "text"
    return mode


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Counts of a job with a known total: `update(n)` as work completes, `close()` (or `with`) at the end."""

    def __init__(self, total: int | None, desc: str, unit: str = "items", *, mode: Mode = "auto",
                 every_s: float | None = None, stream: TextIO | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.mode = _mode(mode, self.stream)
        self.every_s = float(os.environ.get("VISLAB_PROGRESS_S", DEFAULT_EVERY_S)) if every_s is None else every_s
        self.count = 0
        self.t0 = self._last = time.monotonic()
        self._bar: Any = None
        self._closed = False
        if self.mode == "bar":
            from tqdm import tqdm  # only on a terminal

            self._bar = tqdm(total=total, desc=desc, unit=f" {unit}", file=self.stream, dynamic_ncols=True,
                             unit_scale=True, leave=True)

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "text" and time.monotonic() - self._last >= self.every_s:
            self._print()

    def line(self) -> str:
        """`[desc] count/total unit (pct) rate unit/s, time left` (what the text mode prints)."""
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = self.count / elapsed
        done = f"{self.count:,}" + (f"/{self.total:,}" if self.total is not None else "")
        text = f"[{self.desc}] {done} {self.unit}"
        if self.total:
            text += f" ({100 * self.count / self.total:.0f}%)"
        text += f" {rate:,.3g} {self.unit}/s"
        if self.total and self.count < self.total and rate > 0:
            text += f", {_duration((self.total - self.count) / rate)} left"
        elif self._closed:
            text += f", done in {_duration(elapsed)}"
        return text

    def _print(self) -> None:
        self._last = time.monotonic()
        print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "text":
            self._print()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
