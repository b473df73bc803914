"""How many vCPUs this process may really use: CPU affinity and the cgroup CPU quota.

``os.cpu_count()`` reports the host's cores. A container limited with
``--cpus`` (a cgroup CPU quota) or pinned with ``--cpuset-cpus`` (affinity)
gets less, and a server sized by the host count runs more workers than CPUs,
whose throttling shows up as tail latency. Both cgroup v2 (``cpu.max``) and
cgroup v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) are read.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def available_cpus(*, affinity: int | None = None, cgroup_root: Path = CGROUP_ROOT,
                   proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float:
    """The vCPUs this process may use: the smaller of its affinity set and its cgroup
    quota (quota / period, possibly fractional). Arguments exist for tests; by default the
    running process's own values are read."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_self_cgroup)
    return float(affinity) if quota is None else min(float(affinity), quota)


def usable_cpu_count(cpus: float) -> int:
    """Whole CPUs to size a worker pool by: the floor of a fractional quota, at least 1.
    Rounding down keeps CPU-bound workers from being throttled by the quota."""
    return max(1, math.floor(cpus + 1e-9))


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The CPU quota in vCPUs that applies to this process, or None when unlimited or unknown."""
    memberships = _read_memberships(proc_self_cgroup)
    if (cgroup_root / "cgroup.controllers").exists():
        return _quota_v2(cgroup_root, memberships.get("", "/"))
    for controllers, path in memberships.items():
        if "cpu" in controllers.split(","):
            return _quota_v1(cgroup_root, controllers, path)
    return _quota_v1(cgroup_root, "cpu", "/")


def _read_memberships(proc_self_cgroup: Path) -> dict[str, str]:
    """``/proc/self/cgroup`` as {controllers: path}; cgroup v2's single line has controllers ''."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:
        return {}
    memberships = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            memberships[parts[1]] = parts[2] or "/"
    return memberships


def _quota_v2(root: Path, path: str) -> float | None:
    """The tightest ``cpu.max`` from the process's cgroup up to the root (a parent's limit
    binds its children too). Inside a container the cgroup path is often not visible under
    the mount: then only the mount's own files count."""
    folder = root / path.lstrip("/")
    if not folder.is_dir():
        folder = root
    limits = []
    while True:
        limit = _parse_cpu_max(folder / "cpu.max")
        if limit is not None:
            limits.append(limit)
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    return min(limits) if limits else None


def _parse_cpu_max(file: Path) -> float | None:
    """``cpu.max`` holds "<quota> <period>" or "max <period>"."""
    try:
        fields = file.read_text().split()
    except OSError:
        return None
    if len(fields) < 1 or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _quota_v1(root: Path, controllers: str, path: str) -> float | None:
    """cgroup v1: ``cpu.cfs_quota_us`` (-1 = unlimited) over ``cpu.cfs_period_us``, under the
    cpu controller's mount, at the process's path when visible, else at the mount root."""
    mounts = [root / controllers, root / "cpu,cpuacct", root / "cpu"]
    for mount in mounts:
        if not mount.is_dir():
            continue
        for folder in (mount / path.lstrip("/"), mount):
            try:
                quota = int((folder / "cpu.cfs_quota_us").read_text().strip())
                period = int((folder / "cpu.cfs_period_us").read_text().strip())
            except (OSError, ValueError):
                continue
            return quota / period if quota > 0 and period > 0 else None
    return None
