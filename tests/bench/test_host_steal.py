"""Steal time of the servers' vCPUs, from /proc/stat."""
from __future__ import annotations

import time

import pytest

from bench.host_steal import CpuTicks, cpu_ticks, steal_share

# the head of a real /proc/stat of a 2-vCPU guest: user nice system idle iowait irq softirq steal guest guest_nice
STAT = """cpu  2398466 0 738104 3269950 34773 0 197426 6120 0 0
cpu0 1131377 0 339434 1746036 6446 0 105717 2733 0 0
cpu1 1267089 0 398670 1523913 28327 0 91709 3387 0 0
intr 119445351 0 0 0
ctxt 912345
"""


def test_ticks_of_chosen_vcpus_or_of_all():
    assert cpu_ticks((0,), STAT) == CpuTicks(steal=2733, total=1131377 + 339434 + 1746036 + 6446 + 105717 + 2733)
    both = cpu_ticks(None, STAT)
    assert both.steal == 2733 + 3387 and both.total == cpu_ticks((0,), STAT).total + cpu_ticks((1,), STAT).total
    assert cpu_ticks((0, 1), STAT) == both
    assert cpu_ticks((7,), STAT) == CpuTicks(0, 0)          # no such vCPU: nothing counted


def test_steal_share_between_two_readings():
    assert steal_share(CpuTicks(10, 1000), CpuTicks(40, 1200)) == pytest.approx(0.15)
    assert steal_share(CpuTicks(10, 1000), CpuTicks(10, 1000)) is None     # no tick between them
    assert steal_share(None, CpuTicks(10, 1000)) is None


def test_the_live_file_counts_time_passing():
    before = cpu_ticks((0,))
    time.sleep(0.2)                       # USER_HZ is 100 on Linux: about 20 ticks of vCPU 0, whatever it did
    after = cpu_ticks((0,))
    assert after.total - before.total >= 5
    assert 0 <= steal_share(before, after) <= 1
