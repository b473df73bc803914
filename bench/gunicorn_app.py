"""Serve any WSGI app with ``serve``'s own front end and configuration, or under the stock container's gunicorn.

``--options serve`` goes the way ``serve`` goes: settings from the environment
(``SERVE_FRONTEND``, ``SERVE_WORKER_CLASS``, ``SERVE_THREADS``, ...),
``serve.gunicorn_conf.plan_workers`` and ``serve.frontends.run_frontend`` (granian or
gunicorn), so a baseline app runs under exactly the server's configuration and differs
from it only in the app. ``--options stock`` uses
what the stock SageMaker XGBoost container passes to gunicorn (``algorithm_mode/serve.py``:
gevent workers, keep-alive 60 s, the model loaded in each worker after the fork).

Run: ``SERVE_WORKER_CLASS=gevent python -m bench.gunicorn_app bench.baselines:hello_app --port 8081 --workers 2``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")   # before XGBoost's OpenMP runtime can start


def serve_settings(port: int, workers: int | None):
    """``serve``'s settings and worker plan, as ``serve`` works them out from the environment
    (front end included), on 127.0.0.1:``port`` (``workers`` overrides as ``serve --workers`` does)."""
    from serve.cpus import available_cpus
    from serve.gunicorn_conf import plan_workers
    from serve.settings import Settings

    settings = dataclasses.replace(Settings.from_env(), host="127.0.0.1", port=port)
    if workers is not None:
        settings = dataclasses.replace(settings, workers=workers)
    return settings, plan_workers(settings, available_cpus())


def serve_options(port: int, workers: int | None) -> dict:
    """``serve``'s gunicorn settings for the plan of :func:`serve_settings`."""
    from serve.gunicorn_conf import gunicorn_options

    return gunicorn_options(*serve_settings(port, workers), "bench baseline")


def stock_options(port: int, workers: int | None) -> dict:
    """The stock container's gunicorn settings (its ``ScoringService.start``), on 127.0.0.1:``port``."""
    return {"bind": f"127.0.0.1:{port}", "workers": workers or os.cpu_count() or 1, "worker_class": "gevent",
            "keepalive": 60, "loglevel": "warning"}


def main(argv: list[str] | None = None) -> int:
    from serve.frontends import run_frontend
    from serve.gunicorn_conf import GunicornServer
    from serve.settings import SettingsError

    parser = argparse.ArgumentParser(prog="python -m bench.gunicorn_app", description=__doc__.split("\n")[0])
    parser.add_argument("app", help='WSGI app: "module:name" or "module:factory()"')
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--options", choices=["serve", "stock"], default="serve")
    parser.add_argument("--workers", type=int, help="worker processes (default: serve's, or one per CPU for stock)")
    args = parser.parse_args(argv)
    def load():
        from gunicorn.util import import_app

        return import_app(args.app)

    try:
        if args.options == "serve":
            settings, plan = serve_settings(args.port, args.workers)
            return run_frontend(load, settings, plan, "bench baseline")
        options = stock_options(args.port, args.workers)
    except SettingsError as exc:
        print(f"bench.gunicorn_app: {exc}", file=sys.stderr)
        return 2
    GunicornServer(load, options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
