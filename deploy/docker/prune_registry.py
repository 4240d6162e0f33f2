"""Leave in a copy of the file registry only the versions the serving image can serve or roll back to.

    python deploy/docker/prune_registry.py REGISTRY_DIR

The Dockerfile's build stage runs this on its copy of models/registry. A version is kept when an
alias names it now or a rollback can still reach it: those are what `/predict` and `fer registry
rollback` can serve. The history (history.jsonl) is replayed as the registry replays it to roll
back (fer/registry/local.py, `_previous`): promotions push, rollbacks pop, so a version that was
promoted and then rolled back from is off the stack and cannot come back by rollback.
Ensemble members and fp32 training parents go: a fused version
carries its members inside its own graph, and fine-tuning a parent needs torch, which the image
does not have. Each new member would otherwise add 11-22 MB to the image (docs/benchmarks.md).

Standard library only: it runs before the image has fer installed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def reachable(model_dir: Path) -> set[int]:
    """Versions an alias names now, or that a rollback of some alias can still reach."""
    keep: set[int] = set()
    aliases = model_dir / "aliases.json"
    if aliases.is_file():
        keep |= {int(v) for v in json.loads(aliases.read_text()).values()}
    history = model_dir / "history.jsonl"
    stacks: dict[str, list[int]] = {}
    if history.is_file():
        for line in history.read_text().splitlines():
            if not line.strip():
                continue
            move = json.loads(line)
            stack = stacks.setdefault(move["alias"], [])
            if not stack and move.get("from") is not None:
                stack.append(int(move["from"]))
            if move.get("action") == "rollback":
                if stack:
                    stack.pop()
            elif move.get("to") is not None:
                stack.append(int(move["to"]))
    for stack in stacks.values():
        keep |= set(stack)
    return keep


def prune(root: Path) -> list[Path]:
    """Delete every unreachable version folder under `root`; returns what was deleted."""
    gone = []
    for model_dir in sorted(p for p in root.iterdir() if (p / "versions").is_dir()):
        keep = reachable(model_dir)
        if not keep:  # a model nothing serves: leave it whole rather than guess
            continue
        versions = [v for v in (model_dir / "versions").iterdir() if v.name.isdigit()]
        for version in sorted(versions, key=lambda v: int(v.name)):
            if int(version.name) not in keep:
                shutil.rmtree(version)
                gone.append(version)
    return gone


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: prune_registry.py REGISTRY_DIR")
    for path in prune(Path(sys.argv[1])):
        sys.stdout.write(f"left out of the image: {path}\n")
