"""How much of the servers' vCPUs the hypervisor gave to other guests: /proc/stat's steal time.

On a virtual machine whose host shares its cores (this project's 2-vCPU machines; an EC2
burstable instance out of credits), a vCPU is now and then not run at all, for milliseconds,
while the host runs another guest. Every request queued on it waits that long, so a p99 taken
then is the host's as much as the server's, and no server setting changes it. The guest kernel
counts that time per vCPU (the steal column, in USER_HZ ticks): the benchmark reads it for the
servers' vCPUs around each run, so that a p99 comes with the share of its run those vCPUs were
stolen. On a machine whose vCPUs are its own it stays at 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# /proc/stat's per-vCPU columns up to steal: user nice system idle iowait irq softirq steal
# (guest time is counted inside user already)
_COUNTED = 8
_STEAL = 7


@dataclass(frozen=True)
class CpuTicks:
    """Ticks of some vCPUs since boot: stolen, and all of them."""
    steal: int
    total: int


def cpu_ticks(cpus: tuple[int, ...] | None = None, stat_text: str | None = None) -> CpuTicks | None:
    """The steal and total ticks of ``cpus`` (every vCPU when None), from /proc/stat (or
    ``stat_text`` in its format); None where there is no such file (not Linux)."""
    if stat_text is None:
        try:
            stat_text = PROC_STAT.read_text()
        except OSError:
            return None
    wanted = None if cpus is None else {f"cpu{n}" for n in cpus}
    steal = total = 0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or (wanted is not None and name not in wanted):
            continue
        fields = [int(value) for value in rest.split()[:_COUNTED]]
        total += sum(fields)
        steal += fields[_STEAL] if len(fields) > _STEAL else 0
    return CpuTicks(steal, total)


def steal_share(before: CpuTicks | None, after: CpuTicks | None) -> float | None:
    """The share of the vCPUs' time between two readings that was stolen (0 to 1); None without
    readings or with no tick between them."""
    if before is None or after is None or after.total <= before.total:
        return None
    return (after.steal - before.steal) / (after.total - before.total)
