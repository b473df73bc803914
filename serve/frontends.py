"""Run a WSGI app on the front end a worker plan names: granian or gunicorn.

``serve`` runs its app through here, and the benchmark its baseline apps, so that
both are served alike whichever front end is chosen (``SERVE_FRONTEND``).
"""
from __future__ import annotations

from typing import Callable

from serve.gunicorn_conf import GRANIAN, WorkerPlan
from serve.settings import Settings


def run_frontend(load: Callable[[], Callable], settings: Settings, plan: WorkerPlan, worker_started_note: str = "") -> int:
    """Serve the app that ``load`` returns (called once, before the workers fork) until stopped;
    returns the exit code (gunicorn exits 1 itself when it cannot listen)."""
    if plan.frontend == GRANIAN:
        from serve.granian_conf import GranianServer

        return GranianServer(load, settings, plan, worker_started_note).run()
    from serve.gunicorn_conf import GunicornServer, gunicorn_options

    GunicornServer(load, gunicorn_options(settings, plan, worker_started_note)).run()
    return 0
