"""granian's configuration: serve's app behind a native (Rust, hyper + tokio) HTTP server.

granian parses HTTP, keeps connections and buffers bodies in Rust, and calls the app
from Python per request: by default through its WSGI interface (serve's ``ServeApp`` run in
one of the worker's threads), or through its RSGI one (``SERVE_GRANIAN_INTERFACE=rsgi``:
``serve.rsgi``, on one uvloop event loop per worker). That is why it costs a fraction of
gunicorn + gevent's CPU per request (``python -m bench compare`` compares them); the WSGI
interface costs about half of what the RSGI one does, which needs two more hand-offs between
granian's threads and the event loop per request.

What each SageMaker requirement maps to here (and what granian does not do):

* workers: one process per usable vCPU (``plan_workers``). On WSGI each has ``plan.threads``
  Python threads (default 8, started as requests need them): each request, /ping included, runs
  in one. On RSGI each has one event loop thread (small requests, /ping) and ``plan.threads``
  threads for large requests (default 2: the loop answers /ping while they compute). Large
  bodies hand the GIL on between pieces (``serve.app.PIECE_BYTES``). Both have
  ``plan.runtime_threads`` Rust I/O threads and
  ``plan.connections()`` open connections each (granian's "backpressure": a permit per
  connection, keep-alive ones included).
* the app and the model are built in the master, before the workers are forked
  (as gunicorn's ``preload_app``): the workers share its pages, and a model that
  cannot load fails the start once. Python 3.11 forks on Linux by default; granian
  uses that start method.
* SIGTERM: the master stops accepting, signals every worker, and each finishes the
  requests it holds (hyper's graceful shutdown); a worker still busy after
  ``SERVE_GRACEFUL_TIMEOUT`` is killed, before SageMaker's SIGKILL at 30 s.
* a worker that dies is started again (``respawn_failed_workers``). One that dies
  again within 5.5 s of its restart makes granian stop the whole server (its crash-loop
  guard; the 5.5 s is a literal in granian, ``respawn_interval`` only spaces graceful
  restarts): the container would exit and the endpoint's instance be out until SageMaker
  replaced it, for two SIGKILLs (the OOM killer) or crashes in a row. ``GranianServer.run``
  serves again instead, as gunicorn restarts workers whatever their pace (the app stays
  loaded in the master; the listening socket is closed for the moment between the two).
* timeouts: hyper's header read timeout runs from the end of one request until the
  next request's headers are in, so it is both the idle keep-alive timeout and the
  time a slow client gets to send its headers: ``SERVE_KEEPALIVE`` (75 s, longer than
  the 60 s SageMaker's front end keeps an idle connection; checked: a connection idle
  past the timeout is closed), or ``HEADER_READ_TIMEOUT_S`` with keep-alive off. The body
  must arrive within ``SAGEMAKER_MODEL_SERVER_TIMEOUT``, else 408 and the connection closed;
  granian itself has no body timeout: on WSGI ``serve.body_deadline``'s watchdog ends a late
  read by shutting the connection's reading side (a slow client holds its thread until then, or
  until 1 s of silence once all but one of its worker's threads wait for bodies),
  on RSGI ``serve.rsgi`` cancels the wait (a slow client holds only its connection). There is
  no per-request timeout once the body is in (gunicorn's kill of a silent worker has no equivalent).
* keep-alive: on unless ``SERVE_KEEPALIVE=0``.
* 413 before the body is read: granian hands the app the headers first and reads
  the body only when the app asks for it; ``serve.app.ServeApp.declared_length``
  checks Content-Length before (granian itself has no body-size limit).
* logs: granian's own lines go to stderr in serve's format; access log lines only
  with ``SERVE_ACCESS_LOG=true``.
* scheduling: the master and its workers run under SCHED_BATCH (``SERVE_SCHED_POLICY``,
  ``serve.scheduling`` says why); each worker's start line names the policy it has.
"""
from __future__ import annotations

import logging
from typing import Callable

from serve.gunicorn_conf import WorkerPlan, log_level_name
from serve.settings import Settings

log = logging.getLogger(__name__)

HEADER_READ_TIMEOUT_S = 30
BACKLOG = 2048
LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def granian_options(settings: Settings, plan: WorkerPlan, rsgi: bool = True) -> dict:
    """Keyword arguments of ``granian.server.Server`` for the plan (names as in its API), for an
    RSGI app (``serve.rsgi``: one event loop thread per worker) or a WSGI one (``plan.threads``
    Python threads per worker)."""
    from granian.constants import HTTPModes, Interfaces, Loops, TaskImpl
    from granian.http import HTTP1Settings

    interface = {"interface": Interfaces.RSGI, "blocking_threads": 1, "loop": Loops.uvloop,
                 # asyncio's tasks, not granian's own: only those can be cancelled (the body deadline)
                 "task_impl": TaskImpl.asyncio} if rsgi else {"interface": Interfaces.WSGI,
                                                            "blocking_threads": plan.threads}
    return {
        "address": settings.host,
        "port": settings.port,
        **interface,
        "workers": plan.workers,
        "runtime_threads": plan.runtime_threads,
        "backpressure": plan.connections(),
        "backlog": BACKLOG,
        # SageMaker speaks HTTP/1.1 to the container: no HTTP/2 preface sniffing per connection.
        "http": HTTPModes.http1,
        "http1_settings": HTTP1Settings(header_read_timeout=(settings.keepalive or HEADER_READ_TIMEOUT_S) * 1000,
                                        keep_alive=settings.keepalive > 0),
        "websockets": False,
        "respawn_failed_workers": True,
        "workers_kill_timeout": settings.graceful_timeout,
        "log_level": log_level_name(settings.log_level),
        "log_access": settings.access_log,
        "log_dictconfig": _stderr_logging(),
    }


def _stderr_logging() -> dict:
    """granian's logging configuration with its handlers moved to stderr, in serve's format."""
    return {
        "formatters": {"generic": {"()": "logging.Formatter", "fmt": LOG_FORMAT},
                       "access": {"()": "logging.Formatter", "fmt": "%(message)s"}},
        "handlers": {"console": {"formatter": "generic", "class": "logging.StreamHandler",
                                 "stream": "ext://sys.stderr"},
                     "access": {"formatter": "access", "class": "logging.StreamHandler",
                                "stream": "ext://sys.stderr"}},
    }


class GranianServer:
    """granian serving the app that ``load`` returns on the plan's interface (RSGI only for an app
    with ``__rsgi__``), called once in the master before the workers fork. ``worker_started_note`` goes into the line each worker logs at start."""

    def __init__(self, load: Callable[[], Callable], settings: Settings, plan: WorkerPlan,
                 worker_started_note: str = ""):
        self._load, self.settings, self.plan, self.note = load, settings, plan, worker_started_note

    def run(self) -> int:
        """Serve until stopped; the exit code (1: the address could not be listened on)."""
        import os
        import time

        from granian.server import Server

        from serve.scheduling import current_policy, set_policy

        app = self._load()
        plan, note = self.plan, self.note
        refused = set_policy(plan.sched_policy)   # before the workers fork: they and their threads inherit it
        if refused:
            log.warning("scheduling policy %s not set (%s): the workers run under %s", plan.sched_policy,
                        refused, current_policy())

        def in_worker(_target: str):
            log.info("worker %d started (%s, %s): %s", os.getpid(), plan.describe(), current_policy(), note)
            deadline = getattr(app, "body_deadline", None)
            if deadline is not None:   # serve's app on granian's WSGI interface (serve.body_deadline)
                deadline.start()
            return app

        options = granian_options(self.settings, plan, rsgi=plan.interface == "rsgi" and hasattr(app, "__rsgi__"))
        last_restart = float("-inf")
        while True:
            server = Server("serve", **options)
            try:
                server.serve(target_loader=in_worker)
            except RuntimeError as exc:   # granian's socket errors (address in use, no such address)
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.error("cannot listen on %s:%d: %s", self.settings.host, self.settings.port, first_line)
                return 1
            except SystemExit:
                # granian exits 1 after its crash-loop guard stopped it (a worker died, no signal came)
                if server.interrupt_signal or not server.interrupt_children:
                    raise
                log.error("a worker died again within seconds of its restart and granian stopped the server: "
                          "serving again")
                if time.monotonic() - last_restart < 30:
                    time.sleep(1.0)   # workers that cannot live at all: no restart loop at full speed
                last_restart = time.monotonic()
                continue
            return 0
