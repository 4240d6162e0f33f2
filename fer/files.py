"""Small file helpers shared by data loading, artifacts, the registry and feedback (no heavy imports)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    # Read, not set: os.umask() can only be read by changing it, which would race other threads.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write(path: Path, data: str | bytes, fsync: bool = False) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new one, never half.

    mkstemp makes its file owner-only (0600); the file is given the mode a plain `open` would
    (0666 less the umask) before it takes `path`'s place. Otherwise a registry promoted by one
    user is unreadable to another: the serving image, which copies the registry and runs as
    uid 10001, could not read the `aliases.json` of a promotion made as root.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
