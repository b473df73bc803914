"""Capacity arithmetic on a known price table."""
from __future__ import annotations

import pytest

from bench.capacity import HOURS_PER_MONTH, format_plan, load_prices, plan_fleet

TABLE = """
[meta]
region = "test-region"
as_of = "2000-01"
source = "made up for a test"

[[instance]]
type = "ml.small"
vcpus = 2
usd_per_hour = 0.10

[[instance]]
type = "ml.big"
vcpus = 8
usd_per_hour = 0.30

[[instance]]
type = "ml.arm"
vcpus = 2
usd_per_hour = 0.01
arch = "arm64"
"""


@pytest.fixture
def prices(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(TABLE)
    return load_prices(path)


def test_plan_arithmetic(prices):
    plans = plan_fleet(1000.0, prices, target_rps=1_000_000, safety=0.5)
    by_name = {p.instance: p for p in plans}
    assert set(by_name) == {"ml.small", "ml.big"}              # arm64 left out for an x86_64 library
    small = by_name["ml.small"]
    assert small.rps_per_instance == 2000
    assert small.invocations_per_instance_per_minute == 2000 * 0.5 * 60
    assert small.instances == 1000                              # 1e6 / (2000 * 0.5)
    assert small.monthly_usd == pytest.approx(1000 * 0.10 * HOURS_PER_MONTH)
    assert small.usd_per_million == pytest.approx(0.10 / (1000 * 3600) * 1e6)
    big = by_name["ml.big"]
    assert big.instances == 250
    assert big.monthly_usd == pytest.approx(250 * 0.30 * HOURS_PER_MONTH)
    assert [p.instance for p in plans] == ["ml.big", "ml.small"]   # cheapest first


def test_plan_rounds_up_and_keeps_two_instances(prices):
    plans = {p.instance: p for p in plan_fleet(1000.0, prices, target_rps=2001, safety=1.0)}
    assert plans["ml.small"].instances == 2                     # 2001 / 2000, rounded up
    plans = {p.instance: p for p in plan_fleet(1000.0, prices, target_rps=10, safety=1.0)}
    assert plans["ml.big"].instances == 2                       # never fewer than two
    arm = plan_fleet(1000.0, prices, target_rps=10, arch="arm64")
    assert [p.instance for p in arm] == ["ml.arm"]


@pytest.mark.parametrize("kwargs", [dict(safety=0), dict(safety=1.5), dict(target_rps=0)])
def test_plan_refuses_nonsense(prices, kwargs):
    with pytest.raises(ValueError):
        plan_fleet(1000.0, prices, **kwargs)
    with pytest.raises(ValueError):
        plan_fleet(0.0, prices)


@pytest.mark.parametrize("text, fault", [
    ("[meta]\nregion='r'\nas_of='x'\nsource='s'\n", "instance"),
    (TABLE.replace("vcpus = 8", "vcpus = 0"), "positive"),
    ("not toml [", "TOMLDecodeError"),
])
def test_bad_price_tables_are_named(tmp_path, text, fault):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=fault):
        load_prices(path)


def test_shipped_price_table_is_dated_and_readable():
    shipped = load_prices()
    assert shipped.as_of and shipped.source and shipped.instances
    text = format_plan(plan_fleet(500.0, shipped), shipped, target_rps=1e6, safety=0.5, rps_per_vcpu=500.0)
    assert shipped.as_of in text and "ml.c5.xlarge" in text


def test_shipped_table_lists_graviton_types_dated_and_unverified():
    from model_core.machine import CPU_FEATURES

    table = load_prices()
    arm = [item for item in table.instances if item.arch == "arm64"]
    families = {item.name.split(".")[1] for item in arm}
    assert {"c6g", "c7g", "m6g", "m7g"} <= families
    assert all(item.cpu in CPU_FEATURES for item in arm)     # each says which --cpu fits it
    assert table.verified is False and table.as_of


def test_graviton_plan_is_labelled_as_not_measured_until_measured(prices):
    from bench.capacity import GRAVITON_MEASURE_COMMAND, format_graviton_plan

    text = format_graviton_plan(prices, target_rps=1000, safety=0.5, x86_rps_per_vcpu=1000.0)
    assert "NOT MEASURED ON GRAVITON" in text and GRAVITON_MEASURE_COMMAND in text
    assert "ml.arm" in text and "ml.small" not in text
    assert "1,000 req/s per vCPU" in text                    # the x86 figure carried over, and said so
    measured = format_graviton_plan(prices, target_rps=1000, safety=0.5, x86_rps_per_vcpu=1000.0,
                                    graviton_rps_per_vcpu=700.0)
    assert "rate measured on Graviton" in measured and "NOT MEASURED" not in measured
    assert "700 req/s per vCPU" in measured and GRAVITON_MEASURE_COMMAND not in measured


def test_capacity_command_prints_the_graviton_plan():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bench", "capacity", "--rps-per-vcpu", "2000"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    x86, _, arm = out.partition("NOT MEASURED ON GRAVITON")
    assert "ml.c5.large" in x86 and "ml.c7g.large" not in x86
    assert "ml.c7g.large" in arm and "ml.c6g.xlarge" in arm and "--cpu neoverse-n1|neoverse-v1" in arm
    assert "make venv tools && .venv/bin/python -m bench all --quick" in arm


def test_a_report_measured_on_arm64_counts_as_measured_on_graviton():
    from bench.capacity import measured_on_arm64

    assert measured_on_arm64({"platform": "Linux-6.1.0-aws-aarch64-with-glibc2.36"})
    assert not measured_on_arm64({"platform": "Linux-6.1.0-amd64-x86_64-with-glibc2.36"})
