"""The multi-model registry: which models are loaded, shared by every worker process.

SageMaker sends ``POST /models`` to the container once; gunicorn hands it to one
worker. The registry is how that one load becomes visible to every worker: it is
a folder (the state folder) that all workers of one server share:

    generation           an 8-byte counter every worker maps (mmap): bumped on each
                         load and unload, so a worker notices a change with one
                         memory read per request, no system call
    lock                 flock()ed around every change
    entries/<name>.json  one per model: its url, state ("loading" | "ready"), the
                         loading process, its staged folder, its measured memory
    staged/<name>-<id>/  the model's private copy, read from SageMaker's url once

Each load stages the model into a folder of its own (a new ``id`` each time), and
every worker loads the library from there: dlopen returns the copy it already has
for a path it has seen, so a model loaded again under the same name must come
from a new path, and SageMaker's folder may be replaced or removed once loaded.

This module only keeps the records; ``serve.multi_model`` loads and serves.
"""
from __future__ import annotations

import fcntl
import json
import mmap
import os
import re
import secrets
import shutil
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from model_core.artifact import MAX_EXPANDED_BYTES, ArtifactError, safe_extract
from serve.codecs import RequestError
from serve.memory import ModelMemory

# SageMaker's model names are opaque identifiers; these characters make a safe file name
# (no separators, no "..", no leading dot or dash).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_COUNTER = struct.Struct("<Q")
LOADING, READY = "loading", "ready"


@dataclass(frozen=True)
class Entry:
    """One model in the registry."""

    name: str
    url: str                    # as SageMaker gave it
    state: str                  # LOADING | READY
    stage_id: str               # which staged copy (a new one per load)
    pid: int                    # the process that loads it (a dead loader's entry is stale)
    estimate_bytes: int         # the model's files' size, before it is measured
    memory: ModelMemory | None  # measured at load (READY only)
    loaded_at: float = 0.0
    predictor: str = ""         # what serves it, as the loading worker described it

    def to_json(self) -> str:
        data = {"name": self.name, "url": self.url, "state": self.state, "stage_id": self.stage_id,
                "pid": self.pid, "estimate_bytes": self.estimate_bytes, "loaded_at": self.loaded_at,
                "predictor": self.predictor,
                "memory": self.memory.to_dict() if self.memory else None}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "Entry":
        data = json.loads(text)
        memory = ModelMemory.from_dict(data["memory"]) if data.get("memory") else None
        return cls(data["name"], data["url"], data["state"], data["stage_id"], int(data["pid"]),
                   int(data["estimate_bytes"]), memory, float(data.get("loaded_at", 0.0)),
                   data.get("predictor", ""))

    @property
    def cost_bytes(self) -> int:
        """What the budget counts for it: measured when ready, the files' size while loading."""
        return self.memory.total_bytes if self.memory else self.estimate_bytes


def check_name(name) -> str:
    """The model name, or RequestError 400 when it could not be a file name of its own."""
    if not isinstance(name, str) or not name:
        raise RequestError(400, "model_name must be a non-empty string")
    if not _NAME.fullmatch(name) or ".." in name:
        raise RequestError(400, f"model_name {name[:80]!r} may hold only letters, digits, '_', '-' and '.' "
                                "(no path separators, no '..', at most 255 characters)")
    return name


class Registry:
    """The shared records of one server's loaded models, in ``state_dir``.

    ``model_root``: the only folder models are read from (SageMaker's /opt/ml/models).
    ``budget_bytes``: what all loaded models together may cost.
    """

    def __init__(self, state_dir: Path, model_root: Path, budget_bytes: int):
        self.state_dir = Path(state_dir)
        self.model_root = Path(model_root)
        self.budget_bytes = int(budget_bytes)
        self.entries_dir = self.state_dir / "entries"
        self.staged_dir = self.state_dir / "staged"
        self._mapped: mmap.mmap | None = None

    # --- setup --------------------------------------------------------------------------

    def create(self) -> "Registry":
        """Make the state folder (once, in the server's master process, before the fork)."""
        for folder in (self.entries_dir, self.staged_dir):
            folder.mkdir(parents=True, exist_ok=True)
        counter = self.state_dir / "generation"
        if not counter.exists():
            counter.write_bytes(_COUNTER.pack(0))
        (self.state_dir / "lock").touch()
        return self

    def generation(self) -> int:
        """The change counter: one read of a shared page."""
        if self._mapped is None:   # mapped on first use, in each worker
            with open(self.state_dir / "generation", "r+b") as f:
                self._mapped = mmap.mmap(f.fileno(), _COUNTER.size)
        return _COUNTER.unpack_from(self._mapped, 0)[0]

    @contextmanager
    def _locked(self):
        with open(self.state_dir / "lock", "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _bump(self) -> None:
        self.generation()
        _COUNTER.pack_into(self._mapped, 0, _COUNTER.unpack_from(self._mapped, 0)[0] + 1)

    # --- reading --------------------------------------------------------------------------

    def get(self, name: str) -> Entry | None:
        """The entry of ``name`` (a checked name), or None; a dead loader's entry reads as None."""
        try:
            entry = Entry.from_json((self.entries_dir / f"{name}.json").read_text())
        except (OSError, ValueError, KeyError):
            return None
        if entry.state == LOADING and not _alive(entry.pid):
            return None
        return entry

    def entries(self) -> list[Entry]:
        """Every live entry, sorted by name."""
        names = sorted(path.name[:-5] for path in self.entries_dir.glob("*.json"))
        return [entry for entry in (self.get(name) for name in names) if entry is not None]

    def ready(self) -> list[Entry]:
        return [entry for entry in self.entries() if entry.state == READY]

    def staged_path(self, entry: Entry) -> Path:
        return self.staged_dir / f"{entry.name}-{entry.stage_id}"

    def used_bytes(self, *, besides: str | None = None) -> int:
        return sum(entry.cost_bytes for entry in self.entries() if entry.name != besides)

    # --- changes ------------------------------------------------------------------------

    def resolve_url(self, url) -> Path:
        """SageMaker's ``url`` as a path inside the model root: RequestError 400 outside it
        (also through links), 404 when nothing is there."""
        if not isinstance(url, str) or not url or "\0" in url:
            raise RequestError(400, "url must be a non-empty path string")
        root = self.model_root.resolve()
        path = Path(url)
        if not path.is_absolute():
            path = root / path
        resolved = path.resolve()
        if resolved != root and root not in resolved.parents:
            raise RequestError(400, f"url {url[:200]!r} is outside the model root {self.model_root}")
        if not resolved.exists():
            raise RequestError(404, f"no model at url {url[:200]!r}")
        return resolved

    def reserve(self, name: str, url: str, source: Path) -> Entry:
        """Record ``name`` as loading from ``source``: 409 when it is loaded or being loaded,
        507 when its files alone would not fit in the budget left."""
        estimate = _size_of(source)
        with self._locked():
            existing = self.get(name)
            if existing is not None:
                verb = "loaded" if existing.state == READY else "being loaded"
                raise RequestError(409, f"model {name!r} is already {verb}")
            used = self.used_bytes(besides=name)
            if used + estimate > self.budget_bytes:
                raise RequestError(507, _over_budget(name, estimate, used, self.budget_bytes))
            entry = Entry(name, url, LOADING, secrets.token_hex(6), os.getpid(), estimate, None)
            self._write(entry)
        return entry

    def stage(self, entry: Entry, source: Path) -> Path:
        """Copy (a folder) or safely extract (an archive) the model into its own folder.
        RequestError 400 for links or special files in the folder, 422 for a bad archive."""
        dest = self.staged_path(entry)
        if source.is_file():
            if not source.name.endswith(_ARCHIVE_SUFFIXES):
                raise RequestError(400, f"url must name a model folder or a .tar.gz archive, not {source.name!r}")
            try:
                safe_extract(source, dest)
            except ArtifactError as exc:
                raise RequestError(422, f"cannot read the model archive: {exc}") from None
            return dest
        dest.mkdir()
        for item in sorted(source.iterdir()):
            if item.is_symlink():
                raise RequestError(400, f"the model folder holds a link ({item.name!r}): refused")
            if item.is_dir():
                continue   # an artifact or a training output is flat; nested folders are not read
            if not item.is_file():
                raise RequestError(400, f"the model folder holds a special file ({item.name!r}): refused")
            shutil.copyfile(item, dest / item.name, follow_symlinks=False)
        return dest

    def commit(self, entry: Entry, memory: ModelMemory, predictor: str) -> Entry:
        """Mark the reserved entry ready with its measured memory; 507 when it does not fit
        the budget after all, 409 when it was unloaded while it loaded."""
        with self._locked():
            current = self.get(entry.name)
            if current is None or current.stage_id != entry.stage_id:
                raise RequestError(409, f"model {entry.name!r} was unloaded while it loaded")
            used = self.used_bytes(besides=entry.name)
            if used + memory.total_bytes > self.budget_bytes:
                raise RequestError(507, _over_budget(entry.name, memory.total_bytes, used, self.budget_bytes))
            ready = Entry(entry.name, entry.url, READY, entry.stage_id, entry.pid, entry.estimate_bytes,
                          memory, time.time(), predictor)
            self._write(ready)
            self._bump()
        return ready

    def abort(self, entry: Entry) -> None:
        """Forget a reservation that did not load (only if it is still this one) and its copy."""
        with self._locked():
            current = self.get(entry.name)
            if current is not None and current.stage_id == entry.stage_id:
                (self.entries_dir / f"{entry.name}.json").unlink(missing_ok=True)
        shutil.rmtree(self.staged_path(entry), ignore_errors=True)

    def remove(self, name: str) -> Entry:
        """Unload ``name`` for every worker: 404 when it is not loaded, 409 while it loads.
        The staged copy is deleted now: workers that mapped its library keep their
        mapping until they close it (a deleted file lives while it is mapped)."""
        with self._locked():
            entry = self.get(name)
            if entry is None:
                raise RequestError(404, f"model {name!r} is not loaded")
            if entry.state != READY:
                raise RequestError(409, f"model {name!r} is being loaded; unload it once the load answered")
            (self.entries_dir / f"{name}.json").unlink()
            self._bump()
        shutil.rmtree(self.staged_path(entry), ignore_errors=True)
        return entry

    def _write(self, entry: Entry) -> None:
        """Atomically: readers see the old entry or the new one, never half of one."""
        path = self.entries_dir / f"{entry.name}.json"
        tmp = path.with_name(f".{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(entry.to_json())
        tmp.replace(path)


def _size_of(source: Path) -> int:
    """The bytes of a model's files (an archive's own size): the budget's estimate before loading.
    RequestError 400 for a folder that is too large to be one model."""
    if source.is_file():
        return source.stat().st_size
    total = sum(item.stat().st_size for item in source.iterdir() if item.is_file() and not item.is_symlink())
    if total > MAX_EXPANDED_BYTES:
        raise RequestError(400, f"the model folder holds more than {MAX_EXPANDED_BYTES} bytes")
    return total


def _over_budget(name: str, cost: int, used: int, budget: int) -> str:
    mib = 1024 * 1024
    return (f"not enough memory to load model {name!r}: it needs {cost / mib:.1f} MiB, "
            f"{used / mib:.1f} MiB of the {budget / mib:.1f} MiB budget are in use; unload a model")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
