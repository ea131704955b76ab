"""The manifest that travels with every shard set: counts, hashes, sample schema and provenance.

One directory = one shard set (one split) = `shard-000000.tar ...` + `manifest.json`. A data root holds one
set per split (`train/`, `val/`, `test/`). Light module (no torch) so configs are checked without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


class ShardError(RuntimeError):
    """A shard set that cannot be read as its manifest promises (missing, truncated, corrupt)."""


@dataclass
class ShardInfo:
    name: str
    count: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    num_samples: int
    shards: list[ShardInfo]
    schema: dict[str, dict[str, Any]]
    """Per sample field (tar member extension): {'kind': 'jpeg'|'png'|'npy'|'cls'|'json'|'txt'|'bytes', dtype, shape}."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """source, command, time, host, vislab version."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Family-specific facts readers need: class names, session ids, normalisation statistics, frame rate."""
    split: str | None = None
    format_version: int = FORMAT_VERSION

    def save(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / MANIFEST
        atomic_write_text(path, json.dumps(asdict(self), indent=1, sort_keys=False))
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Manifest:
        path = Path(directory) / MANIFEST
        if Path(directory).is_dir() and not os.access(directory, os.R_OK | os.X_OK):
            raise ShardError(unreadable(Path(directory)))
        if not path.is_file():
            raise ShardError(f"no {MANIFEST} in {directory}: not a shard set (write one with `vislab shard`)")
        try:
            raw = json.loads(path.read_text())
            raw["shards"] = [ShardInfo(**s) for s in raw["shards"]]
            return cls(**raw)
        except PermissionError as e:
            raise ShardError(unreadable(path, e)) from e
        except (ValueError, TypeError, KeyError) as e:
            raise ShardError(f"{path}: unreadable manifest ({e})") from e

    def urls(self, directory: str | os.PathLike[str]) -> list[str]:
        return [str(Path(directory) / s.name) for s in self.shards]


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, so no thread ever sees a umask of 0)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:  # no /proc (not Linux): fall back to setting and restoring the umask below
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def unreadable(path: Path, error: OSError | None = None) -> str:
    """One line for a file or folder another user wrote that this user may not read (a shared /data)."""
    folder = path if path.is_dir() else path.parent
    why = error.strerror if error is not None and error.strerror else "Permission denied"
    return (f"{path}: {why.lower()} for user {_user(os.getuid())} (owner: {_user(_owner(path))}); ask the owner "
            f"to run `chmod -R a+rX {folder}` (vislab writes shard sets as readable as the writer's umask allows)")


def _owner(path: Path) -> int:
    try:
        return path.stat().st_uid
    except OSError:
        return -1


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return f"uid {uid}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temp file + rename so a crash never leaves half a file.

    The file gets the mode a plain `open()` would give it (0o666 minus the umask; mkstemp's is 0600), so a
    shard set written into a shared folder is readable by everyone the writer's umask allows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~current_umask())
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_shard_set(directory: str | os.PathLike[str]) -> Manifest:
    """Cheap check before training: manifest readable, every shard present with the promised size and
    readable by this user."""
    m = Manifest.load(directory)
    for s in m.shards:
        p = Path(directory) / s.name
        if not p.is_file():
            raise ShardError(f"shard {p} is missing (manifest lists {len(m.shards)} shards)")
        size = p.stat().st_size
        if size != s.bytes:
            raise ShardError(f"shard {p} is {size} bytes, manifest says {s.bytes}: truncated or rewritten")
        if not os.access(p, os.R_OK):
            raise ShardError(unreadable(p))
    return m


def split_dirs(root: str | os.PathLike[str]) -> dict[str, Path]:
    """The shard sets under a data root, by split name."""
    root = Path(root)
    return {s: root / s for s in SPLITS if (root / s / MANIFEST).is_file()}


def check_data_root(root: str, source: str, key: str = "data.root", required: tuple[str, ...] = ("train", "val")) -> list[str]:
    """Config-time check of a data root: it exists and holds the required splits with intact manifests."""
    if root in ("", "???"):
        return [f"{source}: '{key}' is not set"]
    p = Path(root)
    if not p.is_dir():
        return [f"{source}: '{key}' does not exist: {root}"]
    problems = []
    found = split_dirs(p)
    for split in required:
        if split not in found:
            problems.append(f"{source}: '{key}'={root} has no '{split}/' shard set with a {MANIFEST}")
    for d in found.values():
        try:
            check_shard_set(d)
        except ShardError as e:
            problems.append(f"{source}: {e}")
    return problems
