"""The benchmark's vCPU split: servers on theirs, wrk on the rest, for real processes."""
from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest
import requests

from bench.contenders import serve_command, serve_default_plan
from bench.cpu_split import CpuSplit, split_cpus
from bench.payloads import read_sample_rows
from bench.servers import free_port, running_server

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2


@pytest.mark.parametrize("available, server, load", [
    ({0, 1}, (0,), (1,)),
    ({0, 1, 2, 3}, (0, 1, 2), (3,)),
    (set(range(16)), tuple(range(12)), (12, 13, 14, 15)),
    ({2, 5, 7}, (2, 5), (7,)),
])
def test_a_quarter_of_the_vcpus_at_least_one_go_to_the_load_generator(available, server, load):
    split = split_cpus(available)
    assert (split.server, split.load, split.shared) == (server, load, False)


def test_one_vcpu_or_shared_cpus_run_both_on_all():
    assert split_cpus({3}) == CpuSplit((3,), (3,)) and split_cpus({3}).shared
    both = split_cpus({0, 1, 2, 3}, shared=True)
    assert both == CpuSplit((0, 1, 2, 3), (0, 1, 2, 3)) and both.server_argv(["serve"]) == ["serve"]
    assert "share vCPUs 0-3" in both.describe()


def test_the_server_command_names_its_vcpus_as_taskset_reads_them():
    split = split_cpus({0, 1, 2, 3, 6, 8, 9, 10, 11, 12, 13, 14})
    assert split.server_argv(["serve", "--port", "1"]) == ["taskset", "--cpu-list", "0-3,6,8-11", "serve",
                                                             "--port", "1"]
    assert split.describe() == "servers on vCPU(s) 0-3,6,8-11, load generator on vCPU(s) 12-14"


@pytest.mark.skipif(not TWO_CPUS, reason="a split needs two vCPUs")
def test_serve_and_every_worker_it_forks_run_on_the_server_vcpus_and_plan_for_them(deployed_model, tmp_path):
    split = split_cpus()
    plan = serve_default_plan(len(split.server))
    assert plan.workers == len(split.server)
    model = deployed_model("rtb-small")
    port = free_port()
    command = serve_command("a", model.deployed, port, plan)
    with running_server("a", command.argv, port, env=command.env, log_dir=tmp_path, split=split) as server:
        answer = requests.post(server.url + "/invocations", data=read_sample_rows(model.sample_csv)[0],
                               headers={"Content-Type": "text/csv"}, timeout=10)
        root = psutil.Process(server.proc.pid)
        processes = [root, *root.children(recursive=True)]
        affinities = {p.pid: tuple(sorted(p.cpu_affinity())) for p in processes}
    assert answer.status_code == 200
    assert len(processes) == 1 + plan.workers and set(affinities.values()) == {split.server}


@pytest.mark.skipif(not TWO_CPUS, reason="a split needs two vCPUs")
def test_the_load_generator_side_is_inherited_by_what_the_benchmark_starts():
    """``pin_load_generator`` moves the benchmark's process; wrk, started by it, must land there too
    (checked in a child Python, so that this test process keeps its own vCPUs)."""
    split = split_cpus()
    code = ("import os, subprocess, sys; from bench.cpu_split import CpuSplit; "
            f"CpuSplit({split.server!r}, {split.load!r}).pin_load_generator(); "
            "print(subprocess.check_output([sys.executable, '-c', "
            "'import os; print(sorted(os.sched_getaffinity(0)))'], text=True).strip())")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert child.stdout.strip() == str(list(split.load))
