"""serve.cpus and serve.gunicorn_conf.plan_workers: worker counts follow the CPU limits given,
read from fake cgroup trees (v1 and v2) and affinity counts."""
import dataclasses
from pathlib import Path

import pytest

from serve.cpus import available_cpus, cgroup_cpu_quota, usable_cpu_count
from serve.gunicorn_conf import plan_workers
from serve.settings import Settings


def cgroup_v2(tmp_path: Path, path: str, limits: dict[str, str]) -> tuple[Path, Path]:
    """A fake cgroup v2 mount with cpu.max files at the given relative folders, and a
    /proc/self/cgroup naming ``path``."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / path.strip("/")).mkdir(parents=True, exist_ok=True)
    for folder, value in limits.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(value + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{path}\n")
    return root, proc


def cgroup_v1(tmp_path: Path, quota: str, period: str = "100000", mount: str = "cpu,cpuacct") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    (root / mount).mkdir(parents=True)
    (root / mount / "cpu.cfs_quota_us").write_text(quota + "\n")
    (root / mount / "cpu.cfs_period_us").write_text(period + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"12:memory:/docker/abc\n4:{mount}:/docker/abc\n0::/\n")
    return root, proc


def test_v2_quota_limits_the_affinity(tmp_path):
    root, proc = cgroup_v2(tmp_path, "/", {".": "150000 100000"})
    assert cgroup_cpu_quota(root, proc) == 1.5
    assert available_cpus(affinity=8, cgroup_root=root, proc_self_cgroup=proc) == 1.5
    assert available_cpus(affinity=1, cgroup_root=root, proc_self_cgroup=proc) == 1.0


def test_v2_unlimited_leaves_the_affinity(tmp_path):
    root, proc = cgroup_v2(tmp_path, "/", {".": "max 100000"})
    assert cgroup_cpu_quota(root, proc) is None
    assert available_cpus(affinity=6, cgroup_root=root, proc_self_cgroup=proc) == 6.0


def test_v2_the_tightest_ancestor_binds(tmp_path):
    root, proc = cgroup_v2(tmp_path, "/kubepods/pod1/ctr", {
        "kubepods": "400000 100000", "kubepods/pod1": "200000 100000", "kubepods/pod1/ctr": "max 100000"})
    assert cgroup_cpu_quota(root, proc) == 2.0


def test_v1_quota_and_unlimited(tmp_path):
    root, proc = cgroup_v1(tmp_path, "300000", "100000")
    assert available_cpus(affinity=16, cgroup_root=root, proc_self_cgroup=proc) == 3.0
    root, proc = cgroup_v1(tmp_path / "b", "-1")
    assert cgroup_cpu_quota(root, proc) is None


def test_v1_plain_cpu_mount(tmp_path):
    root, proc = cgroup_v1(tmp_path, "50000", "100000", mount="cpu")
    assert cgroup_cpu_quota(root, proc) == 0.5


def test_no_cgroup_files_at_all(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "missing", tmp_path / "missing-proc") is None
    assert available_cpus(affinity=3, cgroup_root=tmp_path / "missing",
                          proc_self_cgroup=tmp_path / "missing-proc") == 3.0


@pytest.mark.parametrize("cpus, whole", [(0.5, 1), (1.0, 1), (1.5, 1), (2.0, 2), (3.99, 3), (96.0, 96)])
def test_fractional_quotas_round_down(cpus, whole):
    assert usable_cpu_count(cpus) == whole


def test_worker_plan_follows_the_cpus_and_the_overrides(tmp_path):
    root, proc = cgroup_v2(tmp_path, "/", {".": "300000 100000"})
    cpus = available_cpus(affinity=8, cgroup_root=root, proc_self_cgroup=proc)
    from serve.gunicorn_conf import DEFAULT_GRANIAN_WSGI_THREADS

    plan = plan_workers(Settings(), cpus)
    assert (plan.workers, plan.worker_class, plan.threads) == (3, "granian", DEFAULT_GRANIAN_WSGI_THREADS)
    plan = plan_workers(Settings(frontend="gunicorn"), cpus)
    assert (plan.workers, plan.worker_class, plan.threads) == (3, "gevent", 1)
    plan = plan_workers(Settings(workers=5, worker_class="gthread", threads=2), cpus)
    assert (plan.workers, plan.worker_class, plan.threads) == (5, "gthread", 2)
    assert plan_workers(Settings(worker_class="gthread"), 1.0).threads >= 2


def test_granian_plan_and_its_environment():
    from serve.gunicorn_conf import DEFAULT_GRANIAN_WSGI_THREADS, GRANIAN_CONNECTIONS

    plan = plan_workers(Settings(frontend="granian"), 3.0)
    assert (plan.frontend, plan.workers, plan.threads, plan.runtime_threads) == (
        "granian", 3, DEFAULT_GRANIAN_WSGI_THREADS, 1)
    assert plan.connections() == GRANIAN_CONNECTIONS and plan.label() == f"granian w3 t{DEFAULT_GRANIAN_WSGI_THREADS}"
    tuned = plan_workers(Settings(frontend="granian", threads=1, runtime_threads=2, backpressure=50), 2.0)
    assert tuned.label() == "granian w2 t1 r2 bp50"
    # A plan handed over as environment variables (as the benchmark does) is planned back as it was.
    for given in (tuned, plan_workers(Settings(frontend="gunicorn", worker_class="gthread", threads=3), 2.0),
                  plan_workers(Settings(frontend="gunicorn"), 2.0)):
        again = plan_workers(dataclasses.replace(Settings.from_env(given.environment()), workers=given.workers), 2.0)
        assert again == given
    # A worker class alone means gunicorn, whatever the default front end.
    assert plan_workers(Settings(worker_class="sync"), 1.0).frontend == "gunicorn"
