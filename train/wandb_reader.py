"""Read metrics back from an offline wandb run, with no network and no wandb server.

wandb >= 0.2x ships no reader for its offline `run-<id>.wandb` transaction log, so this parses it: a 7-byte
header (b":W&B", uint16 0xBEE1, uint8 version) then LevelDB-log blocks of 32 KiB whose chunks (7-byte header:
crc uint32, length uint16, type uint8 FULL=1/FIRST=2/MIDDLE=3/LAST=4) reassemble into protobuf `Record`s.
Used by the tests and by `vislab runs` to show what an offline run logged.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path}: not a wandb transaction log")
    pos, buf = 7, b""
    while pos + HEADER <= len(data):
        left = BLOCK - (pos % BLOCK)
        if left < HEADER:  # zero padding at the end of a block
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        pos += HEADER
        if kind == 0 and length == 0:  # preallocated / not yet written
            pos += left - HEADER
            continue
        chunk = data[pos:pos + length]
        pos += length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            buf = chunk
        elif kind == MIDDLE:
            buf += chunk
        elif kind == LAST:
            yield buf + chunk
            buf = b""
        else:
            raise ValueError(f"{path}: bad chunk type {kind} at byte {pos}")


def _key(item: Any) -> str:
    return item.key if item.key else "/".join(item.nested_key)


def find_run_file(path: str | Path) -> Path:
    """A `.wandb` file, or the single one inside an offline-run directory."""
    p = Path(path)
    if p.is_file():
        return p
    files = sorted(p.glob("*.wandb")) or sorted(p.glob("wandb/offline-run-*/*.wandb"))
    if not files:
        raise FileNotFoundError(f"no .wandb file in {p}")
    return files[-1]


def read_run(path: str | Path) -> dict[str, Any]:
    """{'history': [row, ...], 'summary': {...}, 'config': {...}, 'run_id': str, 'record_types': {...}}."""
    from wandb.proto import wandb_internal_pb2 as pb  # wandb: slow to import, only when tracking

    file = find_run_file(path)
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    kinds: Counter[str] = Counter()
    run_id = ""
    for payload in _payloads(file):
        rec = pb.Record()  # type: ignore[attr-defined]
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        kinds[kind] += 1
        if kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "config":
            config.update({_key(i): json.loads(i.value_json) for i in rec.config.update})
        elif kind == "run":
            run_id = rec.run.run_id or run_id
            config.update({_key(i): json.loads(i.value_json) for i in rec.run.config.update})
    return {"file": str(file), "run_id": run_id, "history": history, "summary": summary, "config": config,
            "record_types": dict(kinds)}
