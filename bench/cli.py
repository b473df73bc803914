"""``python -m bench``: the benchmark's command line.

Subcommands:

* ``all``: the whole chain in one run: sample models -> compile variants -> in-process
  timings -> generator ceiling -> servers (a)-(d) side by side -> tuning sweep ->
  capacity plan -> report folder (``--quick``: the demo's shorter version);
* ``kernel``: in-process timings only;
* ``load URL``: load any server speaking the SageMaker contract (a local ``serve``, a
  ``docker run`` container), closed loop, open loop at ``--rate``, or ``--find-max``;
* ``compare``, ``sweep``: the HTTP parts alone;
* ``cost-curve``: server CPU per request at each of several fixed rates (``bench.cost_curve``);
* ``reliability``: hostile input, faults and time (``bench.reliability``);
* ``capacity``: fleet size and cost from a req/s-per-vCPU figure or a saved report;
* ``report``: tables and plots again from a saved ``report.json``.

This module parses and dispatches; the chain of ``all`` is ``bench.chain``, the capacity
plan ``bench.capacity``, the report's types ``bench.results``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from bench.chain import DEFAULT_MODELS


def _say(text: str) -> None:
    print(text, flush=True)


def _config_arg(text: str):
    from bench.sweep import parse_config

    try:
        return parse_config(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _prices(args):
    from bench.capacity import PRICES_FILE, load_prices

    return load_prices(args.prices or PRICES_FILE)


def cmd_all(args) -> int:
    from bench.chain import ChainOptions, run_chain
    from bench.report import render_text, write_report

    options = ChainOptions(
        models=tuple(args.models), quick=args.quick, plan=args.config, sweep_model=args.sweep_model,
        sweep_rows=tuple(args.sweep_rows), sweep_plans=tuple(args.configs) if args.configs else None,
        skip_kernel=args.skip_kernel, skip_sweep=args.skip_sweep, slo_ms=args.slo_ms, connections=args.connections,
        duration_s=args.duration, steps=args.steps, target_rps=args.target_rps, safety=args.safety,
        prices=args.prices, graviton_rps_per_vcpu=args.graviton_rps_per_vcpu, shared_cpus=args.shared_cpus)
    out = Path(args.out or f"reports/{dt.datetime.now():%Y%m%d-%H%M%S}")
    report = run_chain(options, command=" ".join(sys.argv), logs=out / "logs", progress=_say)
    written = write_report(report, out)
    _say("")
    _say(render_text(report))
    _say(f"report: {', '.join(str(p) for p in written)} (benchmark took {report.elapsed_s:.0f} s)")
    return 0


def cmd_kernel(args) -> int:
    from bench.kernel import run_kernel
    from bench.models import prepare_model
    from bench.report import figures_table, kernel_goals, kernel_table

    timings = []
    for name in args.models:
        model = prepare_model(name, progress=_say)
        timings += run_kernel(model, batch_sizes=args.batch_sizes, min_time_s=args.min_time, progress=_say)
    _say(kernel_table(timings))
    _say(figures_table(kernel_goals(timings)))
    if args.json:
        Path(args.json).write_text(json.dumps([t.to_dict() for t in timings], indent=1) + "\n")
    return 0


def cmd_load(args) -> int:
    from bench.compare import describe_run
    from bench.load import run_load
    from bench.payloads import make_bodies, read_sample_rows
    from bench.search import find_max_rate

    sample = args.sample
    if sample is None:
        from sample_models.build import DEFAULT_OUT, build
        build(args.model, DEFAULT_OUT)
        sample = DEFAULT_OUT / args.model / "sample.csv"
    bodies = make_bodies(read_sample_rows(sample), args.rows)
    common = dict(connections=args.connections, duration_s=args.duration)
    if args.find_max:
        search = find_max_rate(args.url, bodies, slo_ms=args.slo_ms, steps=args.steps,
                               on_trial=lambda r: _say(describe_run(r)), **common)
        _say(f"max {search.max_rate:,.0f} req/s with p99 under {args.slo_ms:g} ms")
        data = search.to_dict()
    else:
        result = run_load(args.url, bodies, rate=args.rate, path=args.path, content_type=args.content_type,
                          warmup_s=args.warmup, **common)
        _say(describe_run(result))
        _say(f"      p90 {result.latency_ms['p90']:.2f} ms, p99.9 {result.latency_ms['p99.9']:.2f} ms, "
             f"max {result.latency_ms['max']:.2f} ms; {result.requests:,} responses, {result.errors} errors "
             f"{result.error_detail}; wrk CPU {result.generator_cpu_s:.2f} s")
        data = result.to_dict()
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    return 0


def cmd_compare(args) -> int:
    from bench.compare import run_ceiling, run_compare
    from bench.contenders import serve_default_plan
    from bench.models import prepare_model
    from bench.payloads import make_bodies, read_sample_rows
    from bench.report import http_table
    from bench.results import CeilingSummary

    models = [prepare_model(name, variants=("quantized",), progress=_say) for name in args.models]
    split = _pinned_split(args)
    ceiling = run_ceiling(make_bodies(read_sample_rows(models[0].sample_csv), args.rows),
                          connections=args.connections, split=split, progress=_say)
    results = run_compare(models, plan=args.config or serve_default_plan(len(split.server)), rows=args.rows,
                          slo_ms=args.slo_ms, keys=tuple(args.keys), duration_s=args.duration, steps=args.steps,
                          connections=args.connections, log_dir=Path(args.logs), ceiling=ceiling, split=split,
                          progress=_say)
    _say(http_table(results, CeilingSummary.of(ceiling), args.slo_ms))
    from bench.report import figures_table, frontend_figures

    _say(figures_table(frontend_figures(results)))
    return 0


def cmd_sweep(args) -> int:
    from bench.models import prepare_model
    from bench.report import sweep_table
    from bench.sweep import SweepReport, default_grid, quick_grid, recommend, run_sweep

    model = prepare_model(args.model, variants=("quantized",), progress=_say)
    split = _pinned_split(args)
    vcpus = len(split.server)
    grid = args.configs or (quick_grid(vcpus) if args.quick else default_grid(vcpus))
    results = run_sweep(model, grid, rows_list=args.rows, slo_ms=args.slo_ms, duration_s=args.duration,
                        steps=args.steps, connections=args.connections, log_dir=Path(args.logs), split=split,
                        progress=_say)
    _say(sweep_table(SweepReport(model=model.name, results=results, recommendation=recommend(results, grid, vcpus))))
    return 0


def _pinned_split(args):
    """The vCPU split for ``--shared-cpus`` (bench.cpu_split), this process moved to the load side."""
    from bench.cpu_split import split_cpus

    split = split_cpus(shared=args.shared_cpus)
    split.pin_load_generator()
    _say(f"  {split.describe()}")
    return split


def cmd_cost_curve(args) -> int:
    from bench.contenders import other_frontend_plan, serve_default_plan
    from bench.cost_curve import cost_curve_table, run_cost_curve
    from bench.models import prepare_model

    model = prepare_model(args.model, variants=("quantized",), progress=_say)
    split = _pinned_split(args)
    default = serve_default_plan(len(split.server))
    configs = args.configs or [default, other_frontend_plan(default)]
    points = run_cost_curve(model, configs, args.rates, rows=args.rows, duration_s=args.duration,
                            connections=args.connections, log_dir=Path(args.logs), split=split, floors=args.floors,
                            progress=_say)
    _say(cost_curve_table(points))
    return 0


def cmd_capacity(args) -> int:
    from bench.capacity import format_graviton_plan, format_plan, plan_fleet, plan_from_results

    prices = _prices(args)
    if args.report:
        from bench.results import Report

        report = Report.from_dict(json.loads(Path(args.report).read_text()))
        vcpus = report.settings.server_vcpus(report.machine.cpus) if report.settings else report.machine.cpus or 1
        _, texts = plan_from_results(report.http or [], report.sweep, vcpus, prices,
                                     target_rps=args.target_rps, safety=args.safety,
                                     machine_platform=report.machine.platform,
                                     graviton_rps_per_vcpu=args.graviton_rps_per_vcpu)
        for text in texts:
            _say(text + "\n")
        return 0
    plans = plan_fleet(args.rps_per_vcpu, prices, target_rps=args.target_rps, safety=args.safety)
    _say(format_plan(plans, prices, target_rps=args.target_rps, safety=args.safety, rps_per_vcpu=args.rps_per_vcpu))
    _say("\n" + format_graviton_plan(prices, target_rps=args.target_rps, safety=args.safety,
                                     x86_rps_per_vcpu=args.rps_per_vcpu,
                                     graviton_rps_per_vcpu=args.graviton_rps_per_vcpu))
    return 0


def cmd_report(args) -> int:
    from bench.report import render_text, write_report
    from bench.results import Report

    report = Report.from_dict(json.loads(Path(args.report_json).read_text()))
    written = write_report(report, Path(args.out or Path(args.report_json).parent))
    _say(render_text(report))
    _say(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def cmd_reliability(args) -> int:
    from bench.reliability import add_arguments, main_reliability  # noqa: F401 - the command lives there

    return main_reliability(args, _say)


def build_parser() -> argparse.ArgumentParser:
    from bench.capacity import DEFAULT_SAFETY, DEFAULT_TARGET_RPS

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def http_options(p, duration=3, steps=4):
        p.add_argument("--slo-ms", type=float, default=20.0, help="p99 latency objective (default 20)")
        p.add_argument("--connections", type=_at_least_one, default=32,
                       help="keep-alive connections (open loop: one wrk thread each; default 32)")
        p.add_argument("--duration", type=_at_least_one, default=duration, help="seconds per load run")
        p.add_argument("--steps", type=_at_least_one, default=steps, help="bisection steps of the rate search")

    def split_option(p):
        p.add_argument("--shared-cpus", action="store_true",
                       help="run servers and wrk on the same vCPUs (default: apart, bench.cpu_split)")

    def capacity_options(p):
        p.add_argument("--target-rps", type=float, default=DEFAULT_TARGET_RPS, help="load to plan for (req/s)")
        p.add_argument("--safety", type=float, default=DEFAULT_SAFETY, help="autoscaling safety factor (0-1]")
        p.add_argument("--prices", type=Path, help="price table (TOML; default bench/sagemaker_prices.toml)")
        p.add_argument("--graviton-rps-per-vcpu", type=float, metavar="RATE",
                       help="req/s per vCPU measured on a Graviton machine, for the arm64 plan (default: "
                            "the x86 rate, labelled as not measured on Graviton)")

    p = sub.add_parser("all", help="the whole chain, printed and written to a report folder")
    p.add_argument("--quick", action="store_true", help="shorter runs and a 3-configuration sweep (make demo)")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=DEFAULT_MODELS)
    p.add_argument("--config", type=_config_arg, help="worker plan for (a), (b), (d) as CLASS:WORKERS[:THREADS] "
                                                      "(default: serve's own default)")
    p.add_argument("--sweep-model", default="rtb-large", choices=DEFAULT_MODELS)
    p.add_argument("--sweep-rows", type=_at_least_one, nargs="+", default=[1, 100])
    p.add_argument("--configs", type=_config_arg, nargs="+", help="sweep grid (default: full, or quick)")
    p.add_argument("--skip-kernel", action="store_true")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--out", type=Path, help="report folder (default reports/<date-time>)")
    http_options(p, duration=0, steps=0)
    split_option(p)
    capacity_options(p)
    p.set_defaults(func=cmd_all)

    p = sub.add_parser("kernel", help="in-process timings")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=DEFAULT_MODELS)
    p.add_argument("--batch-sizes", type=_at_least_one, nargs="+", default=[1, 10, 100, 1000, 10000])
    p.add_argument("--min-time", type=float, default=0.25, help="seconds per measurement")
    p.add_argument("--json", type=Path, help="also write the timings here")
    p.set_defaults(func=cmd_kernel)

    p = sub.add_parser("load", help="load any base URL speaking the SageMaker contract")
    p.add_argument("url", help="base URL, e.g. http://127.0.0.1:8080")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--sample", type=Path, help="CSV of request rows (no header)")
    source.add_argument("--model", default="rtb-small", choices=DEFAULT_MODELS,
                        help="take rows from this sample model (default rtb-small)")
    p.add_argument("--rows", type=_at_least_one, default=1, help="rows per request")
    p.add_argument("--rate", type=float, help="open loop at this many req/s (default: closed loop)")
    p.add_argument("--find-max", action="store_true", help="search the max rate with p99 under --slo-ms")
    p.add_argument("--warmup", type=int, default=1, help="seconds of closed-loop warm-up first")
    p.add_argument("--path", default="/invocations")
    p.add_argument("--content-type", default="text/csv")
    p.add_argument("--json", type=Path, help="also write the result here")
    http_options(p, duration=5)
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("compare", help="servers (a)-(i) side by side")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=DEFAULT_MODELS)
    p.add_argument("--rows", type=_at_least_one, default=1)
    p.add_argument("--keys", nargs="+", default=list("abcdefghi"), choices=list("abcdefghi"))
    p.add_argument("--config", type=_config_arg, help="CLASS:WORKERS[:THREADS] for (a), (b), (d)")
    p.add_argument("--logs", default="reports/logs", help="server logs folder")
    http_options(p)
    split_option(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sweep", help="gunicorn tuning sweep of server (a)")
    p.add_argument("--model", default="rtb-large", choices=DEFAULT_MODELS)
    p.add_argument("--rows", type=_at_least_one, nargs="+", default=[1, 100])
    p.add_argument("--configs", type=_config_arg, nargs="+", help="CLASS:WORKERS[:THREADS] ... (default: full grid)")
    p.add_argument("--quick", action="store_true", help="one configuration per worker class")
    p.add_argument("--logs", default="reports/logs", help="server logs folder")
    http_options(p)
    split_option(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("cost-curve", help="server CPU per request of (a) at each of several fixed rates")
    p.add_argument("--model", default="rtb-small", choices=DEFAULT_MODELS)
    p.add_argument("--rows", type=_at_least_one, default=1)
    p.add_argument("--rates", type=float, nargs="+", default=[500, 1000, 2000, 4000, 8000, 16000, 24000],
                   help="offered rates, req/s, open loop")
    p.add_argument("--configs", type=_config_arg, nargs="+",
                   help="CLASS:WORKERS[:THREADS] ... (default: serve's default plan and the other front end's)")
    p.add_argument("--floors", action="store_true",
                   help="also each configuration's hello world, and ServeApp's own cost at each rate")
    p.add_argument("--logs", default="reports/logs", help="server logs folder")
    http_options(p)
    split_option(p)
    p.set_defaults(func=cmd_cost_curve)

    p = sub.add_parser("capacity", help="instances, monthly cost and autoscaling target for a load")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--rps-per-vcpu", type=float, help="measured req/s per vCPU at p99 under the SLO")
    given.add_argument("--report", type=Path, help="a report.json of `bench all`")
    capacity_options(p)
    p.set_defaults(func=cmd_capacity)

    p = sub.add_parser("reliability", help="fuzzing, slow clients, worker kills, SIGTERM, soak, memory")
    from bench.reliability import add_arguments
    add_arguments(p)
    p.set_defaults(func=cmd_reliability)

    p = sub.add_parser("report", help="tables and plots again from a saved report.json")
    p.add_argument("report_json", type=Path)
    p.add_argument("--out", type=Path, help="folder for the plots (default: the JSON's)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except BrokenPipeError:          # output piped into `head`
        return 0
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback for expected failures
        from bench.load import LoadError
        if isinstance(exc, (LoadError, ValueError, FileNotFoundError, RuntimeError)):
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        raise
