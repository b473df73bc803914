"""The worker plan of both front ends (:class:`WorkerPlan`, :func:`plan_workers`), and gunicorn's
configuration: workers, threads and worker class from the vCPUs really available.
(granian's own options are in ``serve.granian_conf``; ``serve.frontends`` picks one.)

One single-threaded prediction per process at a time is what a bid filter's
one-row requests need: the work is CPU-bound and short (tens to hundreds of
microseconds), so more workers than usable vCPUs only queue on the scheduler
(and on a cgroup quota, get throttled: tail latency). Hence one worker per
usable vCPU (``serve.cpus``), each overridable by environment.

With gunicorn, the worker class (default ``gevent``, as the stock container) serves keep-alive
connections, so SageMaker's front end does not open a TCP connection per
request, and a greenlet per connection keeps a slow client from holding a
worker. ``gthread`` and ``sync`` are there for comparison (``SERVE_WORKER_CLASS``).

:class:`GunicornServer` runs a WSGI app under these settings: ``serve`` runs its app
with it, and the benchmark its baseline apps, so that both are served alike.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from gunicorn.app.base import BaseApplication

from serve.cpus import usable_cpu_count
from serve.scheduling import DEFAULT_SCHED_POLICY
from serve.settings import Settings

log = logging.getLogger(__name__)

# granian: the benchmark measured it at a fifth of gunicorn + gevent's CPU per request (docs/benchmark.md).
DEFAULT_FRONTEND = "granian"
DEFAULT_WORKER_CLASS = "gevent"
DEFAULT_GTHREAD_THREADS = 4
GEVENT_CONNECTIONS = 1000
# granian's interface to serve's app: WSGI (each request in one of the worker's threads; the body
# deadline is serve.body_deadline's) or RSGI (serve.rsgi: an event loop per worker, the body awaited
# on it). WSGI costs granian about half the CPU per request, and the benchmark measures it ahead
# (docs/benchmark.md); RSGI holds no thread for a slow client (SERVE_GRANIAN_INTERFACE=rsgi).
DEFAULT_GRANIAN_INTERFACE = Settings.granian_interface
# granian on WSGI: every request, /ping included, runs in one of these threads, and holds it while
# it computes or waits for its body (a slow client until the body deadline): /ping finds one free
# while fewer requests than this are in the worker. Four were too few: with four 5 MB requests at a
# time (the ping test of tests/serve/test_server_bare.py) /ping sometimes waited 1.4 and 2.1 s, past
# SageMaker's 2 s, all of one worker's threads busy (connections, not load, are spread over the
# workers); with 8 it answered within 0.1 s in every run. Only serve.app.LARGE_AT_ONCE of them
# decode at once (memory); the rest wait without the GIL. At one row, 8 threads cost the same CPU
# as 4. granian starts them as requests need them.
DEFAULT_GRANIAN_WSGI_THREADS = 8
# granian on RSGI: threads per worker that decode and predict large requests (serve.rsgi; small ones
# and /ping run on the worker's event loop). Two, as gevent's LARGE_AT_ONCE: each 6 MB body expands
# to ~78 MB while decoding, and under the GIL more threads add memory, not speed.
DEFAULT_GRANIAN_RSGI_THREADS = 2
# granian: open connections per worker (its "backpressure" holds a permit per connection,
# keep-alive ones included), as many as a gevent worker takes.
GRANIAN_CONNECTIONS = GEVENT_CONNECTIONS
GRANIAN = "granian"   # the worker "class" of a granian plan: its workers are granian's own


@dataclass(frozen=True)
class WorkerPlan:
    """How the front end runs the app: ``workers`` processes of ``worker_class`` (gunicorn's
    sync, gthread or gevent; or ``granian``), each with ``threads`` Python threads (gthread
    and granian); for granian also ``runtime_threads`` Rust I/O threads and at most
    ``backpressure`` open connections per worker. ``cpus`` is the usable vCPU count it was
    planned for (None for a plan given as such, as the benchmark's sweep gives them). A granian
    worker on ``interface`` wsgi runs every request in one of its ``threads``; on rsgi it runs serve's
    app on one event loop (``serve.rsgi``), and its ``threads`` decode and predict large requests.
    granian's processes and threads run under the Linux scheduling policy ``sched_policy``
    (``serve.scheduling``)."""

    worker_class: str = DEFAULT_WORKER_CLASS     # sync | gthread | gevent (serve.settings.WORKER_CLASSES) | granian
    workers: int = 1
    threads: int = 1
    cpus: float | None = None
    runtime_threads: int = 1
    backpressure: int | None = None              # None: GRANIAN_CONNECTIONS
    interface: str = DEFAULT_GRANIAN_INTERFACE   # granian: wsgi (serve.body_deadline) | rsgi (serve.rsgi)
    sched_policy: str = DEFAULT_SCHED_POLICY     # granian: batch | normal (serve.scheduling)

    @property
    def frontend(self) -> str:
        return GRANIAN if self.worker_class == GRANIAN else "gunicorn"

    def label(self) -> str:
        """Short, for tables: ``gevent w2``, ``gthread w2 t4``, ``granian w2 t2`` (``r2``: runtime
        threads, ``bp64``: backpressure, ``normal``: scheduling policy, where not the defaults)."""
        text = f"{self.worker_class} w{self.workers}"
        if self.worker_class in ("gthread", GRANIAN):
            text += f" t{self.threads}"
        if self.runtime_threads != 1:
            text += f" r{self.runtime_threads}"
        if self.backpressure is not None:
            text += f" bp{self.backpressure}"
        if self.frontend == GRANIAN and self.interface != DEFAULT_GRANIAN_INTERFACE:
            text += f" {self.interface}"
        if self.frontend == GRANIAN and self.sched_policy != DEFAULT_SCHED_POLICY:
            text += f" {self.sched_policy}"
        return text

    def describe(self) -> str:
        if self.frontend == GRANIAN and self.interface == "wsgi":
            text = (f"granian (WSGI), {self.workers} worker(s) x {self.threads} threads, "
                    f"{self.runtime_threads} runtime thread(s), {self.connections()} connections")
        elif self.frontend == GRANIAN:
            text = (f"granian (RSGI), {self.workers} worker(s), each an event loop and {self.threads} thread(s) for "
                    f"large requests, {self.runtime_threads} runtime thread(s), {self.connections()} connections")
        else:
            threads = f" x {self.threads} threads" if self.worker_class == "gthread" else ""
            text = f"gunicorn, {self.workers} {self.worker_class} worker(s){threads}"
        return text + (f" for {self.cpus:g} usable vCPU(s)" if self.cpus is not None else "")

    def connections(self) -> int:
        """Open connections one granian worker takes."""
        return self.backpressure or GRANIAN_CONNECTIONS

    def environment(self) -> dict[str, str]:
        """The ``SERVE_*`` variables that make ``serve`` (with ``--workers``) run this plan:
        how the benchmark hands a plan over."""
        if self.frontend == GRANIAN:
            env = {"SERVE_FRONTEND": GRANIAN, "SERVE_THREADS": str(self.threads),
                   "SERVE_RUNTIME_THREADS": str(self.runtime_threads)}
            if self.backpressure is not None:
                env["SERVE_BACKPRESSURE"] = str(self.backpressure)
            if self.interface != DEFAULT_GRANIAN_INTERFACE:
                env["SERVE_GRANIAN_INTERFACE"] = self.interface
            if self.sched_policy != DEFAULT_SCHED_POLICY:
                env["SERVE_SCHED_POLICY"] = self.sched_policy
            return env
        return {"SERVE_FRONTEND": "gunicorn", "SERVE_WORKER_CLASS": self.worker_class,
                "SERVE_THREADS": str(self.threads)}


def granian_threads(interface: str) -> int:
    """The default Python threads per granian worker on ``interface`` (wsgi or rsgi)."""
    return DEFAULT_GRANIAN_WSGI_THREADS if interface == "wsgi" else DEFAULT_GRANIAN_RSGI_THREADS


def plan_workers(settings: Settings, cpus: float) -> WorkerPlan:
    """Front end, workers, class and threads for ``cpus`` usable vCPUs, unless ``settings``
    override them. A worker class given alone (``SERVE_WORKER_CLASS``) means gunicorn."""
    workers = settings.workers or usable_cpu_count(cpus)
    frontend = settings.frontend or ("gunicorn" if settings.worker_class else DEFAULT_FRONTEND)
    if frontend == GRANIAN:
        threads = settings.threads or granian_threads(settings.granian_interface)
        return WorkerPlan(GRANIAN, workers, threads, cpus=cpus, runtime_threads=settings.runtime_threads or 1,
                          backpressure=settings.backpressure, interface=settings.granian_interface,
                          sched_policy=settings.sched_policy or DEFAULT_SCHED_POLICY)
    worker_class = settings.worker_class or DEFAULT_WORKER_CLASS
    threads = 1
    if worker_class == "gthread":
        threads = settings.threads or DEFAULT_GTHREAD_THREADS
    return WorkerPlan(workers=workers, worker_class=worker_class, threads=threads, cpus=cpus)


def gunicorn_options(settings: Settings, plan: WorkerPlan, worker_started_note: str = "") -> dict[str, Any]:
    """gunicorn settings (names as in its documentation) for the plan. ``worker_started_note``
    goes into the one log line each worker writes when it starts."""

    def post_fork(server, worker) -> None:
        answer_protocol_errors_in_json()
        log.info("worker %d started (%s): %s", worker.pid, plan.describe(), worker_started_note)

    return {
        "bind": [_bind_address(settings.host, settings.port)],
        "workers": plan.workers,
        "worker_class": plan.worker_class,
        "threads": plan.threads,
        "worker_connections": GEVENT_CONNECTIONS,
        # The app (and the model) is built in the master before forking: the workers share
        # its pages, and a model that cannot load fails the start once, not per worker.
        "preload_app": True,
        "timeout": settings.timeout,
        # SIGTERM: stop accepting, finish the requests in flight, exit before SageMaker's SIGKILL (30 s).
        "graceful_timeout": settings.graceful_timeout,
        "keepalive": settings.keepalive,
        "backlog": 2048,
        "accesslog": "-" if settings.access_log else None,
        "errorlog": "-",
        "loglevel": log_level_name(settings.log_level),
        "post_fork": post_fork,
        "proc_name": "serve",
        # gunicorn's heartbeat files go to /tmp by default; /dev/shm (memory) avoids disk stalls.
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        # gunicorn 24+ opens a management socket under $HOME by default: nothing here uses it,
        # and a read-only container file system would make it fail.
        "control_socket_disable": True,
    }


def answer_protocol_errors_in_json() -> None:
    """Make gunicorn's own refusals (a request line, header or chunk its parser cannot read,
    before the app sees the request) JSON ``{"error": ...}`` like every other refusal, in
    place of its HTML page. gunicorn has no setting for this; its workers call
    ``gunicorn.util.write_error``, replaced here in the worker process."""
    from gunicorn import util

    if util.write_error is not _write_json_error:
        util.write_error = _write_json_error


def _write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    if status_int == 501:   # an unsupported Transfer-Encoding: the client's fault, and SageMaker
        status_int, reason = 400, "Bad Request"   # counts every 5xx against the container
    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    from gunicorn import util

    util.write_nonblock(sock, head.encode("latin-1") + body)


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def log_level_name(level: int) -> str:
    """The standard level name at or below a numeric level (gunicorn and granian know only the names)."""
    names = [(logging.CRITICAL, "critical"), (logging.ERROR, "error"), (logging.WARNING, "warning"),
             (logging.INFO, "info")]
    return next((name for number, name in names if level >= number), "debug")


class GunicornServer(BaseApplication):
    """gunicorn with the options given in code, not read from the command line or a file.

    ``load`` returns the WSGI app; gunicorn calls it in the master when ``preload_app``
    is set (serve's options), else in each worker after the fork. Options set to None
    are left at gunicorn's defaults.
    """

    def __init__(self, load: Callable[[], Callable], options: dict[str, Any]):
        self._load, self.options = load, options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self):
        return self._load()
