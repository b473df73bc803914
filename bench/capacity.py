"""Capacity plan: from measured throughput per vCPU to an instance count, a monthly bill and an autoscaling target.

The arithmetic, for each instance type of the price table:

* ``rps_per_instance = rps_per_vcpu * vcpus``: the highest rate one instance holds with
  p99 under the SLO, assuming throughput grows linearly with vCPUs (one gunicorn worker
  per vCPU; run the sweep on a bigger machine to check that).
* Autoscaling target, as AWS's load-testing guidance for
  ``SageMakerVariantInvocationsPerInstance`` puts it: ``rps_per_instance * safety * 60``
  invocations per instance per minute (safety 0.5 by default: room for bursts, for the
  minutes that scaling out takes, and for SageMaker's own front end).
* Instances for the target load at that utilisation:
  ``ceil(target_rps / (rps_per_instance * safety))``, at least ``min_instances``
  (two, so that one Availability Zone can fail).
* Monthly cost = instances * $/hour * 730 hours; cost per million predictions at
  the autoscaling target.

Prices come from a user-editable, dated TOML file (``sagemaker_prices.toml``).

:func:`plan_from_results` picks the measured rate to plan from out of a benchmark run
(server (a), one row per request) and makes one :class:`CapacityEstimate` per model.

Graviton (arm64) types get a plan of their own (:func:`format_graviton_plan`): with a
rate measured on a Graviton machine when one is given, else with the x86 rate per vCPU
carried over and labelled as NOT measured on Graviton. No figure here comes from
emulation: qemu checks that the arm64 library is right, never how fast it is.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.compare import ServerResult
    from bench.sweep import SweepReport

PRICES_FILE = Path(__file__).with_name("sagemaker_prices.toml")
HOURS_PER_MONTH = 730            # AWS's convention for a month of on-demand hours
DEFAULT_TARGET_RPS = 1_000_000
DEFAULT_SAFETY = 0.5
DEFAULT_MIN_INSTANCES = 2


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    usd_per_hour: float
    arch: str
    memory_gib: float | None = None
    cpu: str = ""                   # arm64: the core, i.e. model-compile --cpu (neoverse-v1, ...)


@dataclass(frozen=True)
class PriceTable:
    region: str
    as_of: str
    source: str
    verified: bool
    instances: tuple[InstanceType, ...]


def load_prices(path: Path = PRICES_FILE) -> PriceTable:
    """Read a price table; ValueError naming the file and the fault when it is malformed."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
        meta = data["meta"]
        instances = []
        for row in data["instance"]:
            item = InstanceType(name=str(row["type"]), vcpus=int(row["vcpus"]),
                                usd_per_hour=float(row["usd_per_hour"]), arch=str(row.get("arch", "x86_64")),
                                memory_gib=row.get("memory_gib"), cpu=str(row.get("cpu", "")))
            if item.vcpus <= 0 or item.usd_per_hour <= 0:
                raise ValueError(f"{item.name}: vcpus and usd_per_hour must be positive")
            instances.append(item)
        if not instances:
            raise ValueError("no [[instance]] rows")
        return PriceTable(region=str(meta["region"]), as_of=str(meta["as_of"]), source=str(meta["source"]),
                          verified=bool(meta.get("verified", False)), instances=tuple(instances))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"price table {path}: {exc.__class__.__name__}: {exc}") from exc


@dataclass(frozen=True)
class FleetPlan:
    """One instance type's answer for the target load."""
    instance: str
    vcpus: int
    usd_per_hour: float
    rps_per_instance: float                  # at p99 under the SLO, flat out
    invocations_per_instance_per_minute: int  # the autoscaling target (with the safety factor)
    instances: int
    monthly_usd: float
    usd_per_million: float

    def to_dict(self) -> dict:
        return asdict(self)


def plan_fleet(rps_per_vcpu: float, prices: PriceTable, *, target_rps: float = DEFAULT_TARGET_RPS,
               safety: float = DEFAULT_SAFETY, min_instances: int = DEFAULT_MIN_INSTANCES,
               arch: str = "x86_64") -> list[FleetPlan]:
    """A FleetPlan per instance type of ``arch`` in ``prices``, cheapest per month first."""
    if rps_per_vcpu <= 0:
        raise ValueError("rps_per_vcpu must be positive")
    if not 0 < safety <= 1:
        raise ValueError("safety must be in (0, 1]")
    if target_rps <= 0:
        raise ValueError("target_rps must be positive")
    plans = []
    for item in prices.instances:
        if item.arch != arch:
            continue
        per_instance = rps_per_vcpu * item.vcpus
        at_target = per_instance * safety
        count = max(min_instances, math.ceil(target_rps / at_target))
        plans.append(FleetPlan(
            instance=item.name, vcpus=item.vcpus, usd_per_hour=item.usd_per_hour,
            rps_per_instance=per_instance,
            invocations_per_instance_per_minute=int(at_target * 60),
            instances=count,
            monthly_usd=count * item.usd_per_hour * HOURS_PER_MONTH,
            usd_per_million=item.usd_per_hour / (at_target * 3600) * 1e6,
        ))
    return sorted(plans, key=lambda p: (p.monthly_usd, p.instance))


def format_plan(plans: list[FleetPlan], prices: PriceTable, *, target_rps: float, safety: float,
                rps_per_vcpu: float, label: str = "") -> str:
    """The plans as a terminal table, with the price table's date and source."""
    head = (f"Capacity for {target_rps:,.0f} req/s{f' ({label})' if label else ''}: "
            f"{rps_per_vcpu:,.0f} req/s per vCPU at p99 under the SLO, safety factor {safety}\n"
            f"prices: {prices.region}, as of {prices.as_of}, "
            f"{'verified' if prices.verified else 'NOT verified'} ({prices.source})\n")
    lines = [f"{'instance':<15} {'vCPU':>4} {'$/h':>7} {'req/s/inst':>11} {'target inv/min':>15} "
             f"{'instances':>9} {'$/month':>12} {'$/1M pred':>10}"]
    for p in plans:
        lines.append(f"{p.instance:<15} {p.vcpus:>4} {p.usd_per_hour:>7.3f} {p.rps_per_instance:>11,.0f} "
                     f"{p.invocations_per_instance_per_minute:>15,} {p.instances:>9,} "
                     f"{p.monthly_usd:>12,.0f} {p.usd_per_million:>10.4f}")
    return head + "\n".join(lines)


@dataclass
class CapacityEstimate:
    """One model's plan, from the rate server (a) held per vCPU: every instance type, cheapest first."""
    rps_per_vcpu: float
    basis: str                                # which run the rate comes from
    cpu_bound_rps_per_vcpu: float | None      # 1e6 / server CPU us per request: the rate at 100 % CPU
    target_rps: float
    safety: float
    prices: dict                              # region, as_of, verified, source of the price table
    plans: list[FleetPlan]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CapacityEstimate":
        return cls(**{**data, "plans": [FleetPlan(**p) for p in data["plans"]]})


def plan_from_results(http: list["ServerResult"], sweep: "SweepReport | None", cpus: int, prices: PriceTable, *,
                      target_rps: float = DEFAULT_TARGET_RPS, safety: float = DEFAULT_SAFETY,
                      machine_platform: str = "",
                      graviton_rps_per_vcpu: float | None = None) -> tuple[dict[str, CapacityEstimate], list[str]]:
    """Per model, a CapacityEstimate and its text, from the best single-row rate of server (a);
    the text ends with the Graviton plan (measured when the run was on arm64, ``machine_platform``,
    or ``graviton_rps_per_vcpu`` is given; else labelled as not measured)."""
    # Per model: server (a) at 1 row as compared side by side (serve's configuration), or, where
    # the sweep recommends another configuration for that model, the sweep's run of that one.
    best: dict[str, "ServerResult"] = {r.model: r for r in http if r.key == "a" and r.rows == 1}
    recommended = sweep.recommendation.config if sweep and sweep.recommendation else None
    for r in sweep.results if sweep else []:
        if r.rows == 1 and r.config == recommended and (best[r.model].config if r.model in best else None) != recommended:
            best[r.model] = r
    estimates, texts = {}, []
    for model, r in best.items():
        per_vcpu = r.max_rate / cpus
        plans = plan_fleet(per_vcpu, prices, target_rps=target_rps, safety=safety)
        cpu_bound = 1e6 / r.cpu_us_per_request if r.cpu_us_per_request else None
        estimates[model] = CapacityEstimate(
            rps_per_vcpu=per_vcpu, basis=f"(a) {r.config}: {r.max_rate:,.0f} req/s on {cpus} vCPU(s), "
                                         f"shared with the load generator",
            cpu_bound_rps_per_vcpu=cpu_bound, target_rps=target_rps, safety=safety,
            prices={"region": prices.region, "as_of": prices.as_of, "verified": prices.verified,
                    "source": prices.source},
            plans=plans)
        text = format_plan(plans[:6], prices, target_rps=target_rps, safety=safety, rps_per_vcpu=per_vcpu,
                           label=f"{model}, 1 row per request, from (a) {r.config}; 6 cheapest shown")
        if cpu_bound:
            text += (f"\nUpper bound from the server's CPU cost ({r.cpu_us_per_request:.0f} us per request): "
                     f"{cpu_bound:,.0f} req/s per vCPU at 100 % CPU; a machine of its own lands between the two.")
        graviton = per_vcpu if measured_on_arm64({"platform": machine_platform}) else graviton_rps_per_vcpu
        text += "\n" + format_graviton_plan(prices, target_rps=target_rps, safety=safety,
                                            x86_rps_per_vcpu=per_vcpu, graviton_rps_per_vcpu=graviton, limit=6)
        texts.append(text)
    return estimates, texts


# The one command that measures the Graviton rate, run on a Graviton machine (an EC2
# c7g/m7g/c6g instance or a SageMaker notebook on one): the whole benchmark chain, whose
# capacity section then holds that machine's measured req/s per vCPU.
GRAVITON_MEASURE_COMMAND = "make venv tools && .venv/bin/python -m bench all --quick"


def measured_on_arm64(machine: dict) -> bool:
    """Whether a report's figures were measured on an arm64 machine (``machine`` as bench records it)."""
    return any(arch in str(machine.get("platform", "")) for arch in ("aarch64", "arm64"))


def format_graviton_plan(prices: PriceTable, *, target_rps: float, safety: float,
                         x86_rps_per_vcpu: float, graviton_rps_per_vcpu: float | None = None,
                         limit: int | None = None) -> str:
    """The plan for the price table's arm64 types. Without ``graviton_rps_per_vcpu`` the
    x86 figure stands in, and the heading says so in capitals."""
    measured = graviton_rps_per_vcpu is not None
    rate = graviton_rps_per_vcpu if measured else x86_rps_per_vcpu
    plans = plan_fleet(rate, prices, target_rps=target_rps, safety=safety, arch="arm64")
    if not plans:
        return "Graviton (arm64): the price table lists no arm64 instance type"
    label = ("arm64, rate measured on Graviton" if measured else
             "arm64, rate NOT MEASURED ON GRAVITON: the x86 req/s per vCPU carried over")
    text = format_plan(plans[:limit] if limit else plans, prices, target_rps=target_rps, safety=safety,
                       rps_per_vcpu=rate, label=label)
    cpus = {item.name: item.cpu for item in prices.instances}
    text += "\ncompile for them with: model-compile ... --target linux-aarch64 [--cpu " + "|".join(
        sorted({cpus[p.instance] for p in plans if cpus[p.instance]})) + "] (cpu per type in the price table)"
    if not measured:
        text += (f"\nTo measure the Graviton rate, run on a Graviton machine: {GRAVITON_MEASURE_COMMAND}"
                 f"\n  then pass its req/s per vCPU as --graviton-rps-per-vcpu")
    return text
