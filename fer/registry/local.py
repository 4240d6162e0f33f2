"""The embedded file-based registry (the default backend): versions, aliases, promote, rollback.

The embedded `LocalRegistry` keeps everything in a directory:

    <root>/<name>/versions/<n>/     artifact files (model.onnx, meta.json, ...) + card.json
    <root>/<name>/aliases.json      {"production": 3}
    <root>/<name>/history.jsonl     alias moves, for rollback

It can be layered over a read-only registry (the one shipped in the repository): versions and
aliases are read from both, every write goes to the writable root, so a user's registrations and
promotions never dirty the repository's tracked files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from fer.artifact import CARD_FILE, REQUIRED_FILES, ArtifactError, read_meta
from fer.files import atomic_write, sha256_file
from fer.registry.base import (
    GATE_METRIC,
    NAME_RE,
    CorruptModel,
    ModelNotFound,
    ModelVersion,
    RegistryError,
    build_card,
    check_alias,
    check_name,
    gate,
    gate_measured,
    gate_model_tests,
    parse_ref,
)

log = logging.getLogger(__name__)


class LocalRegistry:
    """File-based registry; see the module docstring for the layout.

    Args:
        root: writable directory (created on first write).
        base: optional read-only registry beneath it (the shipped production model).
    """

    def __init__(self, root: Path | str, base: Path | str | None = None):
        self.root = Path(root)
        self.base = Path(base) if base else None
        if self.base is not None and self.base.resolve() == self.root.resolve():
            self.base = None

    # --- reading ---------------------------------------------------------------------------------

    def _roots(self) -> list[Path]:
        return [r for r in (self.root, self.base) if r is not None]

    def _version_dirs(self, name: str) -> dict[int, Path]:
        found: dict[int, Path] = {}
        for r in reversed(self._roots()):  # the writable root wins on a clash
            vdir = r / name / "versions"
            if vdir.is_dir():
                for d in vdir.iterdir():
                    if d.name.isdigit() and d.is_dir():
                        found[int(d.name)] = d
        return found

    def names(self) -> list[str]:
        out = set()
        for r in self._roots():
            if r.is_dir():
                out |= {d.name for d in r.iterdir() if d.is_dir() and NAME_RE.match(d.name)}
        return sorted(out)

    def aliases(self, name: str) -> dict[str, int]:
        for r in self._roots():  # writable aliases replace the shipped ones once any exist
            p = r / name / "aliases.json"
            if p.is_file():
                try:
                    return {k: int(v) for k, v in json.loads(p.read_text()).items()}
                except (ValueError, AttributeError) as e:
                    raise CorruptModel(f"{p}: unreadable aliases file ({e})") from None
        return {}

    def _load(self, name: str, version: int, path: Path, aliases: dict[str, int]) -> ModelVersion:
        card_path = path / CARD_FILE
        try:
            card = json.loads(card_path.read_text())
        except FileNotFoundError:
            raise CorruptModel(f"{name}@{version}: {card_path} is missing") from None
        except json.JSONDecodeError as e:
            raise CorruptModel(f"{name}@{version}: {card_path} is not valid JSON ({e})") from None
        return ModelVersion(name, version, path, card, sorted(a for a, v in aliases.items() if v == version))

    def list(self, name: str | None = None) -> list[ModelVersion]:
        out = []
        for n in [check_name(name)] if name else self.names():
            aliases = self.aliases(n)
            out += [self._load(n, v, p, aliases) for v, p in sorted(self._version_dirs(n).items())]
        return out

    def get(self, name: str, version: int) -> ModelVersion:
        dirs = self._version_dirs(check_name(name))
        if version not in dirs:
            have = ", ".join(map(str, sorted(dirs))) or "none"
            raise ModelNotFound(f"model {name!r} has no version {version} (versions: {have})")
        return self._load(name, version, dirs[version], self.aliases(name))

    def resolve(self, ref: str, verify: bool = True) -> ModelVersion:
        """Resolve `name@alias`, `name@N` or `name` (= production) to a verified version."""
        name, target = parse_ref(ref)
        if isinstance(target, str):
            aliases = self.aliases(name)
            if target not in aliases:
                if not self._version_dirs(name):
                    raise ModelNotFound(f"no model named {name!r} in {self._describe()}")
                raise ModelNotFound(f"model {name!r} has no version tagged {target!r}")
            target = aliases[target]
        mv = self.get(name, target)
        if verify:
            self.verify(mv)
        return mv

    def verify(self, mv: ModelVersion) -> None:
        """Check that the version's files exist and match the checksums in its card."""
        for fname in REQUIRED_FILES:
            if not (mv.path / fname).is_file():
                raise CorruptModel(f"{mv.ref}: {fname} is missing from {mv.path}")
        for fname, digest in mv.card.get("files", {}).items():
            p = mv.path / fname
            if not p.is_file():
                raise CorruptModel(f"{mv.ref}: {fname} is missing from {mv.path}")
            if sha256_file(p) != digest:
                raise CorruptModel(f"{mv.ref}: {fname} does not match its recorded checksum (corrupt file?)")

    def _describe(self) -> str:
        return " + ".join(str(r) for r in self._roots())

    # --- writing ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, name: str):
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield d
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def register(
        self, name: str, artifact_dir: Path, *, source_run: str | None = None, tags: list[str] | None = None
    ) -> ModelVersion:
        """Copy an artifact in as the next version of `name` (not promoted)."""
        check_name(name)
        artifact_dir = Path(artifact_dir)
        for fname in REQUIRED_FILES:
            if not (artifact_dir / fname).is_file():
                raise CorruptModel(f"cannot register {artifact_dir}: {fname} is missing")
        try:
            meta = read_meta(artifact_dir)
        except ArtifactError as e:
            raise CorruptModel(f"cannot register {artifact_dir}: {e}") from None
        (self.root / name / "versions").mkdir(parents=True, exist_ok=True)
        # Build the whole version in a temporary folder, then claim a number with one rename: a
        # crash leaves only a stray temp folder, and concurrent registrations never share a number.
        tmp = self.root / name / f".tmp-{uuid.uuid4().hex}"
        shutil.copytree(artifact_dir, tmp, ignore=shutil.ignore_patterns("*.tmp", ".*", CARD_FILE))
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        card = build_card(name, meta, source_run=source_run, tags=tags, files=files)
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2))
        try:
            for _ in range(1000):
                version = max(self._version_dirs(name), default=0) + 1
                try:
                    os.rename(tmp, self.root / name / "versions" / str(version))
                    break
                except OSError as e:
                    if e.errno in (errno.EEXIST, errno.ENOTEMPTY):  # a concurrent writer took it
                        continue
                    raise RegistryError(f"could not store {name} in {self.root}: {e}") from e
            else:  # pragma: no cover
                raise RegistryError(f"could not claim a version number for {name!r}")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("registered %s@%d from %s", name, version, artifact_dir)
        return self.get(name, version)

    def _set_alias(self, name: str, alias: str, version: int | None, action: str, **note: Any) -> None:
        aliases = self.aliases(name)
        old = aliases.get(alias)
        if version is None:
            aliases.pop(alias, None)
        else:
            aliases[alias] = version
        atomic_write(self.root / name / "aliases.json", json.dumps(aliases, indent=2), fsync=True)
        with open(self.root / name / "history.jsonl", "a") as f:
            f.write(
                json.dumps({"time": time.time(), "alias": alias, "from": old, "to": version, "action": action, **note})
                + "\n"
            )

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every alias move of `name`: time, alias, from, to, action, and who forced it and why."""
        return self._history(check_name(name))

    def _history(self, name: str) -> list[dict[str, Any]]:
        p = self.root / name / "history.jsonl"
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def _previous(self, name: str, alias: str) -> int | None:
        # Replay the alias's moves as a stack: promotions push, rollbacks pop. The entry under the
        # top is where a rollback goes, so repeated rollbacks walk further back, never ping-pong.
        stack: list[int] = []
        for h in (h for h in self._history(name) if h["alias"] == alias):
            if not stack and h["from"] is not None:
                stack.append(h["from"])
            if h["action"] == "rollback":
                if stack:
                    stack.pop()
            elif h["to"] is not None:
                stack.append(h["to"])
        return stack[-2] if len(stack) >= 2 else None

    def promote(
        self,
        name: str,
        version: int,
        alias: str = "production",
        force: bool = False,
        model_tests: dict[str, Any] | None = None,
        reason: str | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Point `alias` at `version`.

        The gate: a candidate whose validation accuracy is below the current holder's, or whose
        model tests failed, is refused unless `force`; the error says why. With `evaluation`
        (both measured side by side, see `gate_measured`) the measured numbers decide and go into
        the history. A forced promotion is recorded with who forced it and `reason`.
        """
        check_alias(alias)
        with self._lock(name):
            candidate = self.get(name, version)
            self.verify(candidate)
            current = self.aliases(name).get(alias)
            if current == version:
                return candidate
            if not force:
                gate_model_tests(name, version, alias, model_tests)
            measured = None
            if current is not None and not force:
                measured = evaluation and gate_measured(name, version, alias, current, evaluation)
                if measured is None:
                    gate(
                        name,
                        version,
                        candidate.metrics.get(GATE_METRIC),
                        alias,
                        current,
                        self.get(name, current).metrics.get(GATE_METRIC),
                    )
            note = {"forced_by": getpass.getuser(), "reason": reason} if force else {}
            if measured:
                note["gate"] = measured
            self._set_alias(name, alias, version, "promote", **note)
        log.info("%s@%d is now %r (was %s)%s", name, version, alias, current, " (forced)" if force else "")
        return self.get(name, version)

    def rollback(self, name: str, alias: str = "production") -> ModelVersion:
        """Point `alias` back at the version it had before its last promotion."""
        with self._lock(name):
            current = self.aliases(name).get(alias)
            if current is None:
                raise ModelNotFound(f"model {name!r} has no version tagged {alias!r}")
            previous = self._previous(name, alias)
            if previous is None:
                raise RegistryError(f"cannot roll back {name!r} {alias!r}: no earlier version recorded")
            self.verify(self.get(name, previous))
            self._set_alias(name, alias, previous, "rollback")
        log.info("rolled back %s %r: %d -> %d", name, alias, current, previous)
        return self.get(name, previous)
