"""Which vCPUs the servers under test run on, and which the load generator: kept apart.

On a machine that runs both, wrk and the server compete for the same vCPUs: every request
wakes a wrk thread and a server thread that take turns on them, the scheduler migrates both,
and the server's CPU per request and rate then measure that competition as much as the server
(on this project's 2-vCPU machines, a second granian worker per vCPU "won" only by taking
CPU time from wrk: with the two kept apart it costs as much as one, ``docs/benchmark.md``). In
production the load comes from other hosts, so the benchmark pins the servers (and every
worker they fork) to one set of vCPUs and itself, and thereby wrk, to the rest, as a
benchmark on two hosts would. Each server then plans its workers for its own vCPUs, and the
capacity plan divides by them.

``--shared-cpus`` turns it off (the way the benchmark ran before), and a machine with a single
vCPU can only share it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# wrk drives about 40,000 one-row requests/s closed loop on one vCPU at a third of it
# (``python -m bench compare`` prints its ceiling): one vCPU for load per four, at least one.
VCPUS_PER_LOAD_VCPU = 4


@dataclass(frozen=True)
class CpuSplit:
    """The vCPU numbers the servers run on and those the load generator runs on (the same ones
    when ``shared``)."""
    server: tuple[int, ...]
    load: tuple[int, ...]

    @property
    def shared(self) -> bool:
        return bool(set(self.server) & set(self.load))

    def describe(self) -> str:
        if self.shared:
            return f"servers and load generator share vCPUs {_ranges(self.server)}"
        return f"servers on vCPU(s) {_ranges(self.server)}, load generator on vCPU(s) {_ranges(self.load)}"

    def server_argv(self, argv: list[str]) -> list[str]:
        """``argv`` started on the servers' vCPUs (util-linux's ``taskset``, which execs it: the
        process and every worker it forks keep the affinity, and ``serve.cpus`` counts them)."""
        return argv if self.shared else ["taskset", "--cpu-list", _ranges(self.server), *argv]

    def pin_load_generator(self) -> None:
        """Move this process to the load generator's vCPUs: every ``wrk`` it starts inherits them."""
        if not self.shared:
            os.sched_setaffinity(0, self.load)


def split_cpus(available: set[int] | None = None, *, shared: bool = False) -> CpuSplit:
    """The split of ``available`` vCPUs (default: this process's affinity): the highest-numbered
    quarter (at least one) for load, the rest for servers; all shared when ``shared`` or when
    there is only one."""
    cpus = tuple(sorted(available if available is not None else os.sched_getaffinity(0)))
    if shared or len(cpus) < 2:
        return CpuSplit(cpus, cpus)
    load = max(1, len(cpus) // VCPUS_PER_LOAD_VCPU)
    return CpuSplit(cpus[:-load], cpus[-load:])


def _ranges(cpus: tuple[int, ...]) -> str:
    """``0-3,6``: taskset's list form."""
    parts, start = [], None
    for index, cpu in enumerate(cpus):
        if start is None:
            start = cpu
        if index + 1 == len(cpus) or cpus[index + 1] != cpu + 1:
            parts.append(str(start) if start == cpu else f"{start}-{cpu}")
            start = None
    return ",".join(parts)
