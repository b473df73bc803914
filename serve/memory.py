"""Memory figures for the multi-model registry: the container's limit and what one model costs.

A compiled model costs two kinds of memory. Its library's pages come from the page
cache: every worker that maps the file shares them, so they count once. What loading
builds on the heap (XGBoost's booster when stock XGBoost or the router serves it, the
Python objects around the predictor) is private to each worker that loads the model,
so it counts once per worker. Both are measured from ``/proc/self/smaps`` around the
load, in the worker that loads it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

_CGROUP_V2_LIMIT = Path("/sys/fs/cgroup/memory.max")
_CGROUP_V1_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
# cgroup v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages): above this, no limit.
_NO_LIMIT = 1 << 60


def container_memory_limit() -> int:
    """The container's memory limit in bytes: the cgroup's (v2, else v1), or the machine's
    total memory where the cgroup sets none."""
    for path in (_CGROUP_V2_LIMIT, _CGROUP_V1_LIMIT):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _NO_LIMIT:
            return int(text)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def anonymous_bytes() -> int:
    """This process's anonymous resident memory (heap, numpy buffers, XGBoost's booster)."""
    return _rollup_field("Anonymous")


def mapped_file_bytes(path: Path) -> int:
    """Resident bytes of this process's mappings of ``path`` (a loaded library's pages)."""
    target = str(path)
    total = 0
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):   # a mapping's header line
                inside = line.rstrip("\n").endswith(target)
            elif inside and first == "Rss:":
                total += int(line.split()[1]) * 1024
    return total


def _rollup_field(name: str) -> int:
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class ModelMemory:
    """One model's resident cost, measured when it was loaded.

    ``library_bytes``: the compiled library's resident pages (shared by all workers: once).
    ``per_worker_bytes``: the heap growth of the load (a copy in each worker that loads it).
    ``workers``: how many worker processes may hold a copy.
    ``staged_bytes``: the model's private copy under the state folder when that folder
    is in memory (tmpfs), else 0.
    """

    library_bytes: int
    per_worker_bytes: int
    workers: int
    staged_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.library_bytes + self.per_worker_bytes * self.workers + self.staged_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelMemory":
        return cls(int(data["library_bytes"]), int(data["per_worker_bytes"]), int(data["workers"]),
                   int(data.get("staged_bytes", 0)))


def on_tmpfs(path: Path) -> bool:
    """Whether ``path`` lies on a memory file system (its files cost memory, not disk)."""
    best, fstype = "", ""
    target = str(Path(path).resolve())
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                mount_point = fields[1]
                if (target == mount_point or target.startswith(mount_point.rstrip("/") + "/")) \
                        and len(mount_point) > len(best):
                    best, fstype = mount_point, fields[2]
    except OSError:
        return False
    return fstype in ("tmpfs", "ramfs")
