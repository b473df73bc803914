"""What ``serve.app.ServeApp`` itself costs per request, without any HTTP server.

The WSGI callable is called in a tight loop with a fake environ (a one-row CSV or
JSON body in a ``BytesIO``, as a front end hands it over), and each step of the
common path is timed alone the same way, so that the microseconds of a request
can be accounted for: what is the app, what is parse / predict / encode. The
front end's share is what ``python -m bench compare`` measures over HTTP (server
CPU per request minus this).

On granian's WSGI interface (the default) the app also records each body read for the body
deadline's watchdog (``serve.body_deadline``): timed with that record too. granian's RSGI
interface's app (``serve.rsgi.RSGIApp``, opt-in) is timed the same way, its coroutine driven
by hand with the body already read.

A tight loop keeps every cache warm; a server between requests does not. ``--evict-mb N``
times each step once after writing N MB through a buffer (median of ``COLD_CALLS``): the
caches an idle server loses to other work, which is why serve costs more per request at low
rates than at high ones (``python -m bench cost-curve --floors`` measures that over HTTP).
``--idle-us N`` times each step once right after the process slept N microseconds on one vCPU
(pinned, as the benchmark pins its servers): what a request pays when its server's vCPU went
idle before it, whatever the host does to an idle vCPU. With ``--spin`` the same time passes in
a loop on the clock instead of a sleep: the thread never gives up its vCPU, so the difference
is what sleeping and being woken cost the next call, as against time merely passing.

Run: ``python -m bench.app_cost MODEL_FOLDER [--sample sample.csv] [--evict-mb N] [--idle-us N [--spin]] [--profile]``
(a compiled artifact, extracted; ``--profile`` adds cProfile's top functions).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

LOOPS = 20_000
COLD_CALLS = 300


def per_call_us(function: Callable[[], object], loops: int = LOOPS, repeats: int = 5) -> float:
    """Best of ``repeats`` mean times of ``loops`` calls, in microseconds (the best run is the
    one least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(loops):
            function()
        best = min(best, (time.perf_counter() - started) / loops)
    return best * 1e6


def cold_call_us(function: Callable[[], object], evict_mb: int = 0, calls: int = COLD_CALLS,
                 idle_us: int = 0, spin: bool = False) -> float:
    """Median time of one call made right after writing ``evict_mb`` MB through a buffer and (or)
    sleeping ``idle_us`` microseconds (``spin``: looping on the clock as long), in microseconds:
    the step's cost from cold caches, or after its vCPU idled (or its thread waited awake)."""
    import numpy as np

    buffer = np.zeros(evict_mb * 2**20 // 8)
    idle_s = idle_us / 1e6
    times = []
    for _ in range(calls):
        buffer += 1.0
        if idle_s and spin:
            until = time.perf_counter() + idle_s
            while time.perf_counter() < until:
                pass
        elif idle_s:
            time.sleep(idle_s)
        started = time.perf_counter_ns()
        function()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1e3


def fake_environ(body: bytes, content_type: str, accept: str | None = None) -> Callable[[], dict]:
    """A function giving a fresh environ per call, as a front end builds one per request."""
    base = {"REQUEST_METHOD": "POST", "PATH_INFO": "/invocations", "CONTENT_TYPE": content_type,
            "CONTENT_LENGTH": str(len(body)), "SERVER_PROTOCOL": "HTTP/1.1"}
    if accept:
        base["HTTP_ACCEPT"] = accept

    def make() -> dict:
        environ = base.copy()
        environ["wsgi.input"] = io.BytesIO(body)
        return environ

    return make


class _ReadBody:
    """granian's future of the request body once its Rust threads have read it: awaiting it
    returns the body at once (over HTTP the wait for it is a hop through granian's threads and
    the event loop, which ``python -m bench compare`` measures: its rows (d) and (i))."""

    __slots__ = ("body",)

    def __init__(self, body: bytes):
        self.body = body

    def __await__(self):
        return self.body
        yield   # a generator, never suspended


class _Scope:
    """The RSGI scope of a POST /invocations, as granian hands it over (headers: a mapping)."""
    proto, path, method = "http", "/invocations", "POST"

    def __init__(self, headers: dict):
        self.headers = headers


class _Proto:
    """The RSGI protocol of one request: the body, and the answer it was given."""

    def __init__(self, body: bytes):
        self.body, self.answer = body, None

    def __call__(self):
        return _ReadBody(self.body)

    def response_bytes(self, status, headers, body):
        self.answer = (status, body)


def rsgi_call(rsgi_app, body: bytes, content_type: str) -> Callable[[], _Proto]:
    """One request through ``serve.rsgi.RSGIApp`` (the default front end's app) with the body in:
    its coroutine driven by hand, as granian's event loop would run it."""
    scope = _Scope({"content-type": content_type, "content-length": str(len(body))})

    def call() -> _Proto:
        proto = _Proto(body)
        coroutine = rsgi_app.__rsgi__(scope, proto)
        try:
            coroutine.send(None)
        except StopIteration:
            pass
        return proto

    async def first() -> _Proto:
        return call()

    # a worker's first request starts the deadline sweeper on its running loop; the later ones only
    # read the loop's clock, as here (a closed loop's clock still reads)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(first())
    finally:
        loop.close()
    return call


def measure(model_dir: Path, sample: Path | None = None, loops: int = LOOPS,
            evict_mb: int = 0, idle_us: int = 0, spin: bool = False) -> list[tuple[str, float]]:
    """(step, microseconds per call) for the app and its steps on one row of ``sample``: warm (a
    tight loop), or with ``evict_mb`` or ``idle_us`` (and ``spin``) each call alone (``cold_call_us``)."""
    import numpy as np

    from serve import codecs
    from serve.app import create_app
    from serve.body_deadline import BodyDeadline
    from serve.loading import load_model
    from serve.rsgi import RSGIApp
    from serve.settings import Settings

    settings = Settings.from_env({})
    loaded = load_model(model_dir)
    app = create_app(loaded, settings)
    on_granian = create_app(loaded, settings)
    on_granian.body_deadline = BodyDeadline(settings.timeout)   # its watchdog is not started: no worker here
    if sample is not None:
        line = sample.read_text().splitlines()[0].encode()
    else:
        line = ",".join(["0.5"] * loaded.num_feature).encode()
    row = codecs.decode_csv(line, loaded.num_feature)
    json_body = json.dumps([[None if v != v else float(v) for v in row[0].tolist()]]).encode()

    def start_response(status, headers, exc_info=None):
        return None

    make_csv = fake_environ(line, "text/csv")
    rsgi = rsgi_call(RSGIApp(app, 1), line, "text/csv")
    make_json = fake_environ(json_body, "application/json", "application/json")
    predictions = loaded.predictor.predict(row)
    outputs = app.select_outputs(predictions)
    expected = codecs.encode_csv(outputs, selected=False, batch=False)
    assert app(make_csv(), start_response)[0] == expected == on_granian(make_csv(), start_response)[0]
    assert rsgi().answer == (200, expected)
    steps = [
        ("ServeApp on granian WSGI (the default: body read recorded for its deadline), CSV row in, CSV score out",
         lambda: on_granian(make_csv(), start_response)),
        ("RSGIApp (granian RSGI, opt-in), CSV row in, CSV score out (body read)", rsgi),
        ("ServeApp, CSV row in, CSV score out (whole WSGI call)", lambda: app(make_csv(), start_response)),
        ("ServeApp, JSON row in, JSON out (whole WSGI call)", lambda: app(make_json(), start_response)),
        ("  of which: a fresh environ + BytesIO (the front end's part)", make_csv),
        ("  decode_csv, one row", lambda: codecs.decode_csv(line, loaded.num_feature)),
        ("  predictor.predict, one row", lambda: loaded.predictor.predict(row)),
        ("  select outputs", lambda: app.select_outputs(predictions)),
        ("  encode_csv, one score", lambda: codecs.encode_csv(outputs, selected=False, batch=False)),
        ("  str(np.float32) (the shortest round-trip text)", lambda: str(predictions[0])),
        ("  decode_json, one row", lambda: codecs.decode_json(json_body, loaded.num_feature)),
        ("  np.empty((1, 1), float32) (the floor of any numpy call)",
         lambda: np.empty((1, 1), dtype=np.float32)),
    ]
    if evict_mb or idle_us:
        return [(name, cold_call_us(function, evict_mb, idle_us=idle_us, spin=spin)) for name, function in steps]
    return [(name, per_call_us(function, loops)) for name, function in steps]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.app_cost", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model folder (a compiled artifact, extracted, or a bare model)")
    parser.add_argument("--sample", type=Path, help="CSV rows; the first is sent (default: 0.5 per feature)")
    parser.add_argument("--loops", type=int, default=LOOPS)
    parser.add_argument("--evict-mb", type=int, default=0,
                        help="time each step once after writing this many MB (cold caches; median of "
                             f"{COLD_CALLS})")
    parser.add_argument("--idle-us", type=int, default=0,
                        help="time each step once after sleeping this many microseconds on one vCPU "
                             f"(median of {COLD_CALLS})")
    parser.add_argument("--spin", action="store_true",
                        help="with --idle-us: loop on the clock that long instead of sleeping (the thread stays awake)")
    parser.add_argument("--profile", action="store_true", help="also cProfile the whole call")
    args = parser.parse_args(argv)
    if args.spin and not args.idle_us:
        parser.error("--spin needs --idle-us")
    if args.evict_mb:
        print(f"each step from cold caches: one call after {args.evict_mb} MB written, median of {COLD_CALLS}")
    if args.idle_us:
        # woken on another vCPU, a call would run from caches that never held it: not what a pinned server sees
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        after = ("after its thread waited awake: one call after spinning" if args.spin
                 else "after its vCPU idled: one call after sleeping")
        print(f"each step {after} {args.idle_us} us on vCPU {cpu}, median of {COLD_CALLS}")
    for name, us in measure(args.model, args.sample, args.loops, args.evict_mb, args.idle_us, args.spin):
        print(f"{us:8.2f} us  {name}")
    if args.profile:
        import cProfile
        import pstats

        from serve.app import create_app
        from serve.loading import load_model
        from serve.settings import Settings

        app = create_app(load_model(args.model), Settings.from_env({}))
        line = (args.sample.read_text().splitlines()[0].encode() if args.sample
                else b",".join([b"0.5"] * app.num_feature))
        make = fake_environ(line, "text/csv")
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [app(make(), lambda *a: None) for _ in range(args.loops)])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
