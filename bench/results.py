"""What a benchmark run found, as types: the report that ``bench all`` prints and writes.

:class:`Report` holds the parts (in-process timings, the generator's ceiling, the
servers side by side, the sweep, the capacity plan, the figures) as the dataclasses
that measured them, and turns into ``report.json`` (:meth:`Report.to_dict`) and back
(:meth:`Report.from_dict`), so that ``python -m bench report`` renders a saved run
with the same code. Parts a run skipped are left out of the JSON.
"""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from bench.capacity import CapacityEstimate
from bench.compare import ServerResult
from bench.kernel import KernelTiming
from bench.load import Ceiling
from bench.sweep import SweepReport

VERSIONS_OF = ("numpy", "xgboost", "treelite", "tl2cgen", "gunicorn", "gevent", "flask")


@dataclass
class MachineInfo:
    """What the figures were measured on."""
    cpus: int | None = None
    cpu_model: str = ""
    platform: str = ""
    python: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_this_machine(cls) -> "MachineInfo":
        cpu_model = ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        versions = {}
        for name in VERSIONS_OF:
            try:
                from importlib.metadata import version
                versions[name] = version(name if name != "xgboost" else "xgboost-cpu")
            except Exception:  # noqa: BLE001 - a missing package is only left out of the report
                pass
        return cls(cpus=os.cpu_count(), cpu_model=cpu_model, platform=platform.platform(),
                   python=platform.python_version(), versions=versions)


@dataclass
class RunSettings:
    """How the run was made: the SLO and the load runs' length."""
    slo_ms: float
    duration_s: int | None = None
    steps: int | None = None
    connections: int | None = None
    profile: str | None = None          # quick | full
    # bench.cpu_split: the vCPUs the servers ran on and those wrk ran on (the same when shared;
    # None in reports of runs from before the split)
    server_cpus: list[int] | None = None
    load_cpus: list[int] | None = None

    def server_vcpus(self, machine_cpus: int | None) -> int:
        """How many vCPUs the servers had: the split's, else the machine's."""
        return len(self.server_cpus) if self.server_cpus else machine_cpus or 1

    def split_text(self) -> str:
        if not self.server_cpus or not self.load_cpus:
            return ""
        from bench.cpu_split import CpuSplit

        return CpuSplit(tuple(self.server_cpus), tuple(self.load_cpus)).describe()


@dataclass
class CeilingSummary:
    """The load generator's ceiling against the trivial endpoint (requests/s)."""
    closed_rate: float
    open_rate: float
    generator_cpu_s: dict[str, float] | None = None   # closed, open
    duration_s: float | None = None

    @classmethod
    def of(cls, ceiling: Ceiling) -> "CeilingSummary":
        return cls(closed_rate=ceiling.closed_rate, open_rate=ceiling.open_rate,
                   generator_cpu_s={"closed": ceiling.closed.generator_cpu_s, "open": ceiling.open.generator_cpu_s},
                   duration_s=ceiling.closed.duration_s)


@dataclass
class Figure:
    """One figure to reach, as a ratio from this run; ``met`` None where it is only reported."""
    name: str
    target: str
    measured: str
    met: bool | None
    detail: str


@dataclass
class Report:
    machine: MachineInfo
    settings: RunSettings | None
    created_at: str = ""
    command: str = ""
    kernel: list[KernelTiming] | None = None
    ceiling: CeilingSummary | None = None
    http: list[ServerResult] | None = None
    sweep: SweepReport | None = None
    capacity: dict[str, CapacityEstimate] | None = None
    capacity_text: list[str] | None = None
    figures: list[Figure] | None = None
    elapsed_s: float | None = None

    # report.json's key order (as written before the report had types)
    JSON_ORDER = ("created_at", "command", "machine", "settings", "kernel", "ceiling", "http", "sweep",
                  "capacity", "capacity_text", "figures", "elapsed_s")

    def to_dict(self) -> dict:
        """report.json's content: every part this run has, in JSON_ORDER."""
        data = {}
        for name in self.JSON_ORDER:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "sweep":
                value = value.to_dict()
            elif name == "capacity":
                value = {model: estimate.to_dict() for model, estimate in value.items()}
            elif isinstance(value, list):
                value = [asdict(item) if hasattr(item, "__dataclass_fields__") else item for item in value]
            elif hasattr(value, "__dataclass_fields__"):
                value = asdict(value)
            data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        """A Report from report.json's content (parts it lacks stay None); ValueError naming
        the fault when it is not a report."""
        if not isinstance(data, dict):
            raise ValueError("not a report of `bench all`: not a JSON object")
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a report of `bench all`: {exc.__class__.__name__}: {exc}") from None

    @classmethod
    def _from_dict(cls, data: dict) -> "Report":
        def listed(key, kind):
            return [kind(**item) for item in data[key]] if key in data else None

        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"report: unknown part(s) {', '.join(sorted(unknown))}")
        return cls(
            machine=MachineInfo(**data.get("machine", {})),
            settings=RunSettings(**data["settings"]) if "settings" in data else None,
            created_at=data.get("created_at", ""), command=data.get("command", ""),
            kernel=listed("kernel", KernelTiming),
            ceiling=CeilingSummary(**data["ceiling"]) if "ceiling" in data else None,
            http=listed("http", ServerResult),
            sweep=SweepReport.from_dict(data["sweep"]) if "sweep" in data else None,
            capacity=({model: CapacityEstimate.from_dict(e) for model, e in data["capacity"].items()}
                      if "capacity" in data else None),
            capacity_text=data.get("capacity_text"),
            figures=listed("figures", Figure),
            elapsed_s=data.get("elapsed_s"))
