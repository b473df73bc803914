"""The benchmark's output: terminal tables, the figures to reach, JSON and PNG plots in one folder.

Everything here reads a ``bench.results.Report`` (or its parts), which a saved
``report.json`` turns back into, so a run can be turned into tables and plots again
(``python -m bench report reports/<run>/report.json``).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from bench.compare import HEADROOM_SHARE, ServerResult
from bench.kernel import KernelTiming
from bench.models import DEPLOYED_VARIANT
from bench.results import CeilingSummary, Figure, Report
from bench.sweep import SweepReport

DEPLOYED = f"compiled {DEPLOYED_VARIANT}"
STOCK = "inplace_predict"
# steal (bench.host_steal) from which the HTTP runs' note says the host took part of the vCPUs
STEAL_WORTH_NOTING = 0.02


def _ms(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    if value < 1:    # three figures, as for ms: a 1-row call of 1.39 us is not "1us"
        return f"{value * 1000:.3g}us"
    return f"{value:.3g}ms" if value < 100 else f"{value:.0f}ms"


def _best_of_repeats(kernel: list[KernelTiming]) -> dict[tuple[str, str, int], float]:
    """(model, predictor, batch) -> the lower of the repeats' median ms per call.

    Other processes on the machine can only add time to a measurement, never take it
    away: the better repeat is the closer one to what the code costs.
    """
    values = defaultdict(list)
    for t in kernel:
        values[(t.model, t.predictor, t.batch)].append(t.median_ms)
    return {key: min(v) for key, v in values.items()}


def kernel_table(kernel: list[KernelTiming]) -> str:
    """Per model: median time per call of each predictor at each batch size, both repeats."""
    by_model = defaultdict(lambda: defaultdict(dict))
    batches = sorted({t.batch for t in kernel})
    for t in kernel:
        by_model[t.model][t.predictor].setdefault(t.batch, []).append(t.median_ms)
    out = []
    for model, predictors in by_model.items():
        out.append(f"In-process, {model}: median per call, one thread (repeat 1 / repeat 2)")
        out.append(f"{'predictor':<20}" + "".join(f"{b:>19,}" for b in batches))
        for name, cells in predictors.items():
            row = f"{name:<20}"
            for b in batches:
                values = cells.get(b, [])
                row += f"{' / '.join(_ms(v) for v in values):>19}"
            out.append(row)
        out.append("")
    return "\n".join(out)


def http_table(http: list[ServerResult], ceiling: CeilingSummary | None, slo_ms: float) -> str:
    """One line per server run: max rate under the SLO and what it cost."""
    out = []
    if ceiling:
        out.append(f"Load generator ceiling on this machine (wrk vs a trivial endpoint): closed loop "
                   f"{ceiling.closed_rate:,.0f} req/s, open loop {ceiling.open_rate:,.0f} req/s")
    out.append(f"{'server':<37}{'model':<11}{'rows':>5}  {'config':<19}{'max req/s':>10}{'p50':>9}{'p99':>9}"
               f"{'closed max':>11}{'CPU us/req':>11}{'switches':>9}  flags")
    out.append(f"{'':<37}{'':<11}{'':>5}  {'':<19}{f'p99<{slo_ms:g}ms':>10}{'':>9}{'':>9}{'':>11}{'':>11}{'/req':>9}")
    for r in http:
        cpu = f"{r.cpu_us_per_request:.0f}" if r.cpu_us_per_request else "-"
        switches = f"{r.switches_per_request:.1f}" if r.switches_per_request is not None else "-"
        flags = "NEAR GENERATOR CEILING" if r.near_ceiling else ""
        out.append(f"{r.label:<37}{r.model:<11}{r.rows:>5}  {r.config:<19}{r.max_rate:>10,.0f}"
                   f"{_ms(r.p50_ms):>9}{_ms(r.p99_ms):>9}{r.closed_rate:>11,.0f}{cpu:>11}{switches:>9}  {flags}")
    return "\n".join(out)


def contention_note(results: list[ServerResult], cpus: int) -> str:
    """A line on how busy the machine was during the HTTP runs (1-minute load average)."""
    loads = [value for r in results for value in r.loadavg]
    if not loads:
        return ""
    text = (f"1-minute load average during these runs: {min(loads):.1f} to {max(loads):.1f} "
            f"on {cpus} vCPU(s), this benchmark's own server and load generator included.")
    if max(loads) > 1.5 * cpus:
        text += (" Other processes competed for the CPUs: latency tails include their stalls, and rates "
                 "are lower than on a machine of one's own.")
    steals = [r.steal_at_max for r in results if r.steal_at_max is not None]
    if steals and max(steals) >= STEAL_WORTH_NOTING:
        text += (f" The host gave up to {max(steals):.0%} of the servers' vCPU time to other guests (steal) in "
                 "the runs at the max rates: a vCPU that is not run holds every request queued on it, so "
                 "those p99s are partly the host's.")
    return text


def sweep_table(sweep: SweepReport) -> str:
    """Max rate under the SLO per configuration and rows per request, and the recommendation."""
    results = sweep.results
    if not results:
        return ""
    rows_list = sorted({r.rows for r in results})
    configs = list(dict.fromkeys(r.config for r in results))
    rate = {(r.config, r.rows): r for r in results}
    out = [f"Tuning sweep, server (a) on {sweep.model}: max req/s with p99 under the SLO (p99 at that rate)"]
    out.append(f"{'config':<16}" + "".join(f"{str(n) + ' row(s)':>24}" for n in rows_list))
    for config in configs:
        cells = ""
        for n in rows_list:
            r = rate.get((config, n))
            if r is None:
                cell = "-"
            elif r.max_rate > 0:
                cell = f"{r.max_rate:,.0f} ({_ms(r.p99_ms)})"
            else:
                cell = "none held"
            cells += f"{cell:>24}"
        out.append(f"{config:<16}{cells}")
    rec = sweep.recommendation
    if rec:
        out.append(f"Recommended: {rec.config} ({rec.workers_per_vcpu:g} worker(s) per vCPU"
                   + (f", {rec.threads} threads" if rec.worker_class in ("gthread", "granian") else "")
                   + f"): {rec.reason}")
    return "\n".join(out)


# The kernel generator's goals, from the ``compiled kernel`` rows of a run.
KERNEL = "compiled kernel"
KERNEL_BATCH_PATH = "kernel, batch path"     # bench.kernel: predict_batch, no one-row shortcut
ONE_ROW_US = {"rtb-large": 8.0, "rtb-small": 1.5}
NS_PER_TREE_ROW_AT_1000 = {"rtb-large": 12.0}
MIN_SPEEDUP_VS_STOCK = {"rtb-large": 1.5}


def kernel_goals(kernel: list[KernelTiming]) -> list[Figure]:
    """The kernel generator's figures as met or missed (the better repeat of each measurement)."""
    from sample_models.build import RECIPES

    best: dict[tuple, float] = {}
    for t in kernel:
        key = (t.model, t.predictor, t.batch)
        best[key] = min(best.get(key, float("inf")), t.median_ms)
    figures = []
    for model in sorted({t.model for t in kernel}):
        trees = RECIPES[model][0].n_trees if model in RECIPES else None
        one = best.get((model, KERNEL, 1))
        if one is not None and model in ONE_ROW_US:
            target = ONE_ROW_US[model]
            figures.append(Figure(name=f"{model}, 1 row, in-process: kernel library", target=f"<= {target:g} us",
                                measured=f"{one * 1e3:.2f} us", met=one * 1e3 <= target,
                                detail=f"{one * 1e3 / target:.2f}x the target"))
        batch_path = best.get((model, KERNEL_BATCH_PATH, 1))
        if one is not None and batch_path is not None:
            figures.append(Figure(name=f"{model}, 1 row: CompiledModel's one-row path vs its batch path",
                                target="(reported)", measured=f"{one * 1e3:.2f} us vs {batch_path * 1e3:.2f} us",
                                met=None, detail=f"{batch_path / one:.2f}x faster, same library, same run"))
        thousand = best.get((model, KERNEL, 1000))
        if thousand is not None and trees and model in NS_PER_TREE_ROW_AT_1000:
            ns = thousand * 1e6 / 1000 / trees
            target = NS_PER_TREE_ROW_AT_1000[model]
            figures.append(Figure(name=f"{model}, 1,000 rows, in-process: kernel ns per tree per row",
                                target=f"<= {target:g} ns", measured=f"{ns:.2f} ns", met=ns <= target,
                                detail=f"{thousand:.3f} ms per call, {trees} trees"))
        ratios = {b: best[(model, "inplace_predict", b)] / best[(model, KERNEL, b)]
                  for (m, p, b) in best if m == model and p == KERNEL and (model, "inplace_predict", b) in best}
        if ratios and model in MIN_SPEEDUP_VS_STOCK:
            worst = min(ratios, key=ratios.get)
            target = MIN_SPEEDUP_VS_STOCK[model]
            figures.append(Figure(name=f"{model}: kernel vs inplace_predict at every batch size",
                                target=f">= {target:g}x", measured=f"{ratios[worst]:.2f}x (worst, at {worst:,} rows)",
                                met=ratios[worst] >= target,
                                detail=", ".join(f"{b:,}: {r:.1f}x" for b, r in sorted(ratios.items()))))
        tl2cgen = {b: best[(model, "compiled tl2cgen", b)] / best[(model, KERNEL, b)]
                   for (m, p, b) in best if m == model and p == KERNEL and (model, "compiled tl2cgen", b) in best}
        if tl2cgen:
            figures.append(Figure(name=f"{model}: kernel vs TL2cgen (quantized) library", target="(reported)",
                                measured=f"{min(tl2cgen.values()):.2f}x to {max(tl2cgen.values()):.2f}x", met=None,
                                detail=", ".join(f"{b:,}: {r:.1f}x" for b, r in sorted(tl2cgen.items()))))
    return figures


def compute_figures(kernel: list[KernelTiming], http: list[ServerResult]) -> list[Figure]:
    """The issue's figures to reach, as ratios from this run: name, target, measured, met, detail."""
    figures = []
    med = _best_of_repeats(kernel)
    models = sorted({t.model for t in kernel})
    for model in models:
        compiled, stock = med.get((model, DEPLOYED, 1)), med.get((model, STOCK, 1))
        if compiled and stock:
            ratio = stock / compiled
            figures.append(Figure(name=f"{model}, 1 row, in-process: compiled vs inplace_predict",
                                target=">= 6x" if model == "rtb-large" else "(reported)", measured=f"{ratio:.1f}x",
                                met=ratio >= 6 if model == "rtb-large" else None,
                                detail=f"{_ms(compiled)} vs {_ms(stock)} per call"))
        # Per repeat (the predictors of one batch size and repeat ran back to back), then the
        # better repeat: noise between repeats cannot pair one repeat's luck with another's.
        by_repeat = {(t.predictor, t.batch, t.repeat): t.median_ms for t in kernel if t.model == model}
        worst, worst_batch = 0.0, None
        for batch in sorted({t.batch for t in kernel if t.model == model}):
            ratios = []
            for repeat in sorted({t.repeat for t in kernel}):
                router = by_repeat.get(("router", batch, repeat))
                others = [v for v in (by_repeat.get((DEPLOYED, batch, repeat)), by_repeat.get((STOCK, batch, repeat)))
                          if v]
                if router and others:
                    ratios.append(router / min(others))
            if ratios and min(ratios) > worst:
                worst, worst_batch = min(ratios), batch
        if worst_batch is not None:
            figures.append(Figure(name=f"{model}: router within 10 % of the better of compiled and stock, every batch",
                                target="<= 1.10x", measured=f"{worst:.2f}x (worst, at {worst_batch:,} rows)",
                                met=worst <= 1.10,
                                detail="router / min(compiled quantized, inplace_predict), better repeat"))
    figures += kernel_goals(kernel)
    rates = {(r.key, r.model, r.rows): r.max_rate for r in http}
    cpu = {(r.key, r.model, r.rows): r.cpu_us_per_request for r in http}

    def cpu_note(key_a, model_a, key_b, model_b, as_share=False) -> str:
        # The same comparison by server CPU per request: what the rates would be with the
        # CPUs to themselves, and far less sensitive to other processes' stalls.
        mine, other = cpu.get((key_a, model_a, 1)), cpu.get((key_b, model_b, 1))
        if not mine or not other:
            return ""
        ratio = other / mine
        return f"; by server CPU per request {ratio:.0%}" if as_share else f"; by server CPU per request {ratio:.2f}x"

    for model in sorted({r.model for r in http if r.key == "a"}):
        a = rates.get(("a", model, 1))
        for key, target in (("c", 3.0), ("b", 1.5)):
            other = rates.get((key, model, 1))
            if a is not None and other is not None:
                ratio = a / other if other else float("inf")
                figures.append(Figure(name=f"{model}, 1 row, HTTP: max rate under the SLO, (a) vs ({key})",
                                    target=f">= {target:g}x", measured=f"{ratio:.2f}x", met=ratio >= target,
                                    detail=f"{a:,.0f} vs {other:,.0f} req/s" + cpu_note("a", model, key, model)))
    a, d = rates.get(("a", "rtb-small", 1)), rates.get(("d", "-", 1))
    if a is not None and d:
        share = a / d
        figures.append(Figure(name="rtb-small, 1 row, HTTP: (a) vs hello world (d)", target=">= 60 %",
                            measured=f"{share:.0%}", met=share >= 0.6,
                            detail=f"{a:,.0f} vs {d:,.0f} req/s" + cpu_note("a", "rtb-small", "d", "-", True)))
    return figures + frontend_figures(http)


def frontend_figures(http: list[ServerResult]) -> list[Figure]:
    """granian vs gunicorn + gevent, serve's rows (a) and (e) and hello worlds (d) and (f), 1 row:
    CPU per request <= 1/4, max rate >= 3x, p99 <= 5 ms at 80 % of that rate, ServeApp's own
    cost (CPU per request minus its front end's hello world) <= 25 us, rtb-large's CPU ratio
    within 20 % of rtb-small's."""
    one_row = [r for r in http if r.rows == 1]

    def row(model: str, granian: bool, serve: bool = True) -> ServerResult | None:
        keys = ("a", "e") if serve else ("d", "f")
        return next((r for r in one_row if r.key in keys and (r.model == model or not serve)
                     and r.config.startswith("granian") == granian), None)

    figures, cpu_ratio = [], {}
    for model in ("rtb-small", "rtb-large"):
        fast, slow = row(model, True), row(model, False)
        if not fast or not slow or not fast.cpu_us_per_request or not slow.cpu_us_per_request:
            continue
        ratio = slow.cpu_us_per_request / fast.cpu_us_per_request
        cpu_ratio[model] = ratio
        detail = f"{fast.cpu_us_per_request:.0f} vs {slow.cpu_us_per_request:.0f} us ({fast.config} vs {slow.config})"
        if model == "rtb-small":
            figures.append(Figure(name="rtb-small, 1 row: server CPU per request, granian vs gunicorn + gevent",
                                target="<= 1/4 (>= 4x less)", measured=f"{ratio:.2f}x less", met=ratio >= 4,
                                detail=detail))
            rate = fast.max_rate / slow.max_rate if slow.max_rate else float("inf")
            figures.append(Figure(name="rtb-small, 1 row: max open-loop rate with p99 under the SLO, granian vs gunicorn",
                                target=">= 3x", measured=f"{rate:.2f}x", met=rate >= 3,
                                detail=f"{fast.max_rate:,.0f} vs {slow.max_rate:,.0f} req/s"))
            if fast.p99_at_headroom_ms is not None:
                figures.append(headroom_figure("granian", fast))
        for granian in (True, False):
            serve, hello = row(model, granian), row(model, granian, serve=False)
            if model == "rtb-small" and serve and hello and serve.cpu_us_per_request and hello.cpu_us_per_request:
                figures.append(own_cost_figure('granian' if granian else 'gunicorn + gevent', serve, hello))
    figures += _other_interface_figures(one_row, row("rtb-small", False))
    figures += _body_read_figure(one_row)
    if len(cpu_ratio) == 2:
        drift = cpu_ratio["rtb-large"] / cpu_ratio["rtb-small"]
        met = 0.8 <= drift <= 1.2
        # a miss just outside the range shows the digits that put it there (0.7992 prints 0.799, not 0.80)
        digits = 2
        while not met and 0.8 <= round(drift, digits) <= 1.2 and digits < 6:
            digits += 1
        figures.append(Figure(name="rtb-large: CPU ratio granian vs gunicorn within 20 % of rtb-small's",
                            target="0.80-1.20", measured=f"{drift:.{digits}f}", met=met,
                            detail=f"{cpu_ratio['rtb-large']:.2f}x vs {cpu_ratio['rtb-small']:.2f}x"))
    return figures


HEADROOM_P99_MS = 5.0


def headroom_figure(frontend: str, result: ServerResult) -> Figure:
    """The p99 at 80 % of ``result``'s max rate against its goal; a miss says by how much, with
    the digits that show it (a median of 5.0046 ms prints 5.00 ms)."""
    p99 = result.p99_at_headroom_ms
    met = p99 <= HEADROOM_P99_MS
    over = p99 / HEADROOM_P99_MS
    measured = f"{p99:.2f} ms" + ("" if met else f", {over:.{3 if over < 1.01 else 2}f}x the target")
    return Figure(name=f"rtb-small, 1 row: {frontend}'s p99 at 80 % of its max rate", target=f"<= {HEADROOM_P99_MS:g} ms",
                  measured=measured, met=met, detail=headroom_detail(result))


def headroom_detail(result: ServerResult) -> str:
    """Where the p99 at 80 % of the max rate was taken, each run's p99 (the figure is their median),
    how busy the server was there, and the load generator's own p99 at that rate."""
    busy, runs, steals = result.vcpus_busy_at_headroom, result.p99s_at_headroom_ms, result.steals_at_headroom
    measured_steals = [steal for steal in steals or [] if steal is not None]
    return (f"at {HEADROOM_SHARE * result.max_rate:,.0f} req/s"
            + (f", median of {len(runs)} runs: {', '.join(f'{p99:.2f}' for p99 in runs)} ms" if runs else "")
            + (f", the server using {busy:.2f} vCPU" if busy is not None else "")
            + (f", host steal {', '.join(f'{steal:.0%}' for steal in measured_steals)}" if measured_steals else "")
            + (f"; the generator alone at that rate (trivial endpoint): p99 {result.generator_p99_at_headroom_ms:.2f} ms"
               if result.generator_p99_at_headroom_ms is not None else ""))


def granian_interface(config: str) -> str | None:
    """The granian interface a row's config names ("granian w2 t8" is the default, WSGI;
    "granian w2 t2 rsgi"); None for gunicorn's rows."""
    if not config.startswith("granian"):
        return None
    return "rsgi" if config.endswith(" rsgi") else "wsgi"


def _other_interface_figures(one_row: list[ServerResult], gunicorn: ServerResult | None) -> list[Figure]:
    """The same goals for serve on granian's other interface, rows (g) and (h) (RSGI, when the
    default is granian's WSGI), side by side with the default's."""
    serve = next((r for r in one_row if r.key == "g" and r.model == "rtb-small"), None)
    hello = next((r for r in one_row if r.key == "h"), None)
    if not serve or not gunicorn or not serve.cpu_us_per_request or not gunicorn.cpu_us_per_request:
        return []
    name = f"granian {(granian_interface(serve.config) or '').upper()}"
    ratio = gunicorn.cpu_us_per_request / serve.cpu_us_per_request
    figures = [Figure(name=f"rtb-small, 1 row: server CPU per request, {name} (opt-in) vs gunicorn + gevent",
                      target="<= 1/4 (>= 4x less)", measured=f"{ratio:.2f}x less", met=ratio >= 4,
                      detail=f"{serve.cpu_us_per_request:.0f} vs {gunicorn.cpu_us_per_request:.0f} us")]
    if gunicorn.max_rate:
        rate = serve.max_rate / gunicorn.max_rate
        figures.append(Figure(name=f"rtb-small, 1 row: max open-loop rate with p99 under the SLO, {name} "
                                   "(opt-in) vs gunicorn", target=">= 3x", measured=f"{rate:.2f}x", met=rate >= 3,
                              detail=f"{serve.max_rate:,.0f} vs {gunicorn.max_rate:,.0f} req/s"))
    if serve.p99_at_headroom_ms is not None:
        figures.append(headroom_figure(name, serve))
    if hello and hello.cpu_us_per_request:
        figures.append(own_cost_figure(name, serve, hello))
    return figures


def own_cost_figure(frontend: str, serve: ServerResult, hello: ServerResult) -> Figure:
    """ServeApp's own CPU per request on a front end: serve's row minus its hello world's. Each is
    taken at its own max rate, and a server that keeps its vCPU busy at any rate (granian) costs
    1 / rate there: a hello world whose search landed at a lower rate than serve's makes the
    difference negative, which measures the two searches, not the app, and is not counted as met."""
    own = serve.cpu_us_per_request - hello.cpu_us_per_request
    detail = f"{serve.cpu_us_per_request:.0f} - {hello.cpu_us_per_request:.0f} us"
    if own < 0:
        detail += (f"; the hello world cost more at its max rate ({hello.max_rate:,.0f} req/s) than serve at "
                   f"its own ({serve.max_rate:,.0f}): not a measure of the app")
    return Figure(name=f"rtb-small, 1 row: ServeApp's own CPU per request on {frontend} (serve minus hello world)",
                  target="<= 25 us", measured=f"{own:.0f} us", met=(own <= 25) if own >= 0 else None, detail=detail)


def _body_read_figure(one_row: list[ServerResult]) -> list[Figure]:
    """What granian's RSGI body read costs per request: the hello world on granian's RSGI interface
    ((d), (f) or (h)) minus the same without awaiting the body (i). Reported, no target: it is
    what the RSGI interface's way of reading a body adds to its floor."""
    unread = next((r for r in one_row if r.key == "i"), None)
    read = next((r for r in one_row if r.key in ("d", "f", "h") and granian_interface(r.config) == "rsgi"), None)
    if not unread or not read or not unread.cpu_us_per_request or not read.cpu_us_per_request:
        return []
    cost = read.cpu_us_per_request - unread.cpu_us_per_request
    switches = ""
    if read.switches_per_request is not None and unread.switches_per_request is not None:
        switches = (f"; context switches per request {read.switches_per_request:.1f} vs "
                    f"{unread.switches_per_request:.1f}")
    return [Figure(name="rtb-small, 1 row: granian RSGI's body read (hello world minus the same, body unread)",
                   target="(reported)", measured=f"{cost:.0f} us per request", met=None,
                   detail=f"{read.cpu_us_per_request:.0f} - {unread.cpu_us_per_request:.0f} us; "
                          f"{read.max_rate:,.0f} vs {unread.max_rate:,.0f} req/s{switches}")]


def figures_table(figures: list[Figure]) -> str:
    out = ["Figures to reach (ratios from this run)"]
    for f in figures:
        verdict = {True: "MET", False: "MISSED", None: ""}[f.met]
        out.append(f"  {verdict:<7}{f.name}: {f.measured} (target {f.target}; {f.detail})")
    return "\n".join(out)


def render_text(report: Report) -> str:
    """The whole report as terminal text."""
    machine, split = report.machine, report.settings.split_text()
    parts = [f"Benchmark {report.created_at} on {machine.cpus if machine.cpus is not None else '?'} vCPU(s), "
             f"{machine.cpu_model}; SLO p99 <= {report.settings.slo_ms:g} ms" + (f"; {split}" if split else ""),
             f"command: {report.command}", ""]
    if report.kernel:
        parts.append(kernel_table(report.kernel))
    if report.http:
        parts += [http_table(report.http, report.ceiling, report.settings.slo_ms), ""]
    if report.sweep:
        parts += [sweep_table(report.sweep), ""]
    note = contention_note((report.http or []) + (report.sweep.results if report.sweep else []),
                           machine.cpus or 1)
    if note:
        parts += [note, ""]
    for text in report.capacity_text or []:
        parts += [text, ""]
    if report.figures:
        parts.append(figures_table(report.figures))
    return "\n".join(parts).rstrip() + "\n"


def plot_kernel(kernel: list[KernelTiming], path: Path) -> Path | None:
    """Median latency per call vs rows per call, one line per predictor, one panel per model."""
    if not kernel:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med = _best_of_repeats(kernel)
    models = sorted({m for m, _, _ in med})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        for name in dict.fromkeys(p for m, p, _ in med if m == model):
            points = sorted((b, v) for (m, p, b), v in med.items() if m == model and p == name)
            style = "--" if name.startswith("parse") else "-"
            ax.plot([b for b, _ in points], [v for _, v in points], style, marker="o", ms=3, label=name)
        ax.set(xscale="log", yscale="log", xlabel="rows per call", ylabel="median ms per call",
               title=f"{model}: in-process latency, one thread")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)
    return path


def _save(fig, path: Path) -> None:
    """Write a figure as PNG and free it (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_http(http: list[ServerResult], slo_ms: float, path: Path) -> Path | None:
    """p99 latency vs offered load for each server run (open-loop trials), one panel per rows count."""
    runs = [r for r in http if r.search.get("trials")]
    if not runs:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r.model if r.key != "d" else None, r.rows) for r in runs}, key=str)
    panels = [p for p in panels if p[0] is not None]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6.5 * max(1, len(panels)), 4.8), squeeze=False)
    colors = {"a": "C0", "b": "C1", "c": "C2", "d": "C3"}
    for ax, (model, rows) in zip(axes[0], panels):
        for r in runs:
            if r.rows != rows or (r.model != model and r.key != "d"):
                continue
            trials = [(t["offered_rate"], t["latency_ms"]["p99"]) for t in r.search["trials"]]
            best = {}                       # a re-run rate: the line goes through its better run
            for rate, p99 in trials:
                best[rate] = min(p99, best.get(rate, p99))
            color = colors.get(r.key)
            ax.scatter([x for x, _ in trials], [y for _, y in trials], s=10, color=color)
            ax.plot(sorted(best), [best[x] for x in sorted(best)], color=color,
                    label=f"{r.label} [{r.config}]")
        ax.axhline(slo_ms, color="red", lw=0.8, ls=":", label=f"SLO {slo_ms:g} ms")
        ax.set(yscale="log", xlabel="offered load (req/s, open loop)", ylabel="p99 latency (ms, from intended send)",
               title=f"{model}, {rows} row(s) per request")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)
    return path


def plot_sweep(sweep: SweepReport | None, path: Path) -> Path | None:
    """Max rate under the SLO per configuration, one bar group per rows-per-request count."""
    results = sweep.results if sweep else None
    if not results:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_list = sorted({r.rows for r in results})
    configs = list(dict.fromkeys(r.config for r in results))
    fig, axes = plt.subplots(1, len(rows_list), figsize=(5.5 * len(rows_list), 4.2), squeeze=False)
    for ax, rows in zip(axes[0], rows_list):
        values = [next((r.max_rate for r in results if r.config == c and r.rows == rows), 0) for c in configs]
        ax.bar(range(len(configs)), values)
        ax.set_xticks(range(len(configs)), configs, rotation=30, ha="right", fontsize=8)
        ax.set(ylabel="max req/s with p99 under the SLO", title=f"{sweep.model}, {rows} row(s) per request")
        ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)
    return path


def write_report(report: Report, folder: Path) -> list[Path]:
    """Write report.json, report.txt and the plots into ``folder``; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    json_path = folder / "report.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n")
    written.append(json_path)
    text_path = folder / "report.txt"
    text_path.write_text(render_text(report))
    written.append(text_path)
    slo = report.settings.slo_ms
    for made in (plot_kernel(report.kernel or [], folder / "kernel_latency.png"),
                 plot_http(report.http or [], slo, folder / "http_p99_vs_load.png"),
                 plot_sweep(report.sweep, folder / "sweep.png")):
        if made:
            written.append(made)
    return written
