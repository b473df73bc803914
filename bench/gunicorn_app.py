"""Serve any WSGI app under gunicorn with ``serve``'s own configuration, or the stock container's.

``--options serve`` goes the way ``serve`` goes: settings from the environment
(``SERVE_WORKER_CLASS``, ``SERVE_THREADS``, ...), ``serve.gunicorn_conf.plan_workers``,
``gunicorn_options`` and ``GunicornServer``, so a baseline app runs under exactly the
server's configuration and differs from it only in the app. ``--options stock`` uses
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


def serve_options(port: int, workers: int | None) -> dict:
    """``serve``'s gunicorn settings, as ``serve`` works them out from the environment, on
    127.0.0.1:``port`` (``workers`` overrides as ``serve --workers`` does)."""
    from serve.cpus import available_cpus
    from serve.gunicorn_conf import gunicorn_options, plan_workers
    from serve.settings import Settings

    settings = dataclasses.replace(Settings.from_env(), host="127.0.0.1", port=port)
    if workers is not None:
        settings = dataclasses.replace(settings, workers=workers)
    return gunicorn_options(settings, plan_workers(settings, available_cpus()), "bench baseline")


def stock_options(port: int, workers: int | None) -> dict:
    """The stock container's gunicorn settings (its ``ScoringService.start``), on 127.0.0.1:``port``."""
    return {"bind": f"127.0.0.1:{port}", "workers": workers or os.cpu_count() or 1, "worker_class": "gevent",
            "keepalive": 60, "loglevel": "warning"}


def main(argv: list[str] | None = None) -> int:
    from serve.gunicorn_conf import GunicornServer
    from serve.settings import SettingsError

    parser = argparse.ArgumentParser(prog="python -m bench.gunicorn_app", description=__doc__.split("\n")[0])
    parser.add_argument("app", help='WSGI app: "module:name" or "module:factory()"')
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--options", choices=["serve", "stock"], default="serve")
    parser.add_argument("--workers", type=int, help="worker processes (default: serve's, or one per CPU for stock)")
    args = parser.parse_args(argv)
    try:
        options = (serve_options if args.options == "serve" else stock_options)(args.port, args.workers)
    except SettingsError as exc:
        print(f"bench.gunicorn_app: {exc}", file=sys.stderr)
        return 2

    def load():
        from gunicorn.util import import_app

        return import_app(args.app)

    GunicornServer(load, options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
