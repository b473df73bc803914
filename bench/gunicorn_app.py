"""Serve any WSGI app under gunicorn with ``serve``'s own configuration, or the stock container's.

``--options serve`` takes every gunicorn setting from ``serve.gunicorn_conf.gunicorn_options``
(the same function ``serve`` uses), so a baseline app runs under exactly the server's
configuration and differs from it only in the app. ``--options stock`` uses what the
stock SageMaker XGBoost container passes to gunicorn (``algorithm_mode/serve.py``: gevent
workers, keep-alive 60 s, the model loaded in each worker after the fork).

Run: ``python -m bench.gunicorn_app bench.baselines:hello_app --port 8081 --worker-class gevent --workers 2``.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")   # before XGBoost's OpenMP runtime can start

from gunicorn.app.base import BaseApplication  # noqa: E402


class WsgiSpecApplication(BaseApplication):
    """gunicorn serving the app named by ``spec`` ("module:name" or "module:factory()")."""

    def __init__(self, spec: str, options: dict):
        self.spec, self.options = spec, options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self):
        from gunicorn.util import import_app

        return import_app(self.spec)


def serve_options(port: int, worker_class: str, workers: int, threads: int) -> dict:
    """``serve``'s gunicorn settings for this worker plan, bound to 127.0.0.1:``port``."""
    from serve.cpus import available_cpus
    from serve.gunicorn_conf import WorkerPlan, gunicorn_options
    from serve.settings import Settings

    settings = Settings.from_env({"SERVE_BIND_HOST": "127.0.0.1", "SAGEMAKER_BIND_TO_PORT": str(port),
                                  "SAGEMAKER_CONTAINER_LOG_LEVEL": "WARNING"})
    plan = WorkerPlan(workers=workers, worker_class=worker_class, threads=threads, cpus=available_cpus())
    return gunicorn_options(settings, plan, "bench baseline")


def stock_options(port: int, workers: int) -> dict:
    """The stock container's gunicorn settings (its ``ScoringService.start``), on 127.0.0.1:``port``."""
    return {"bind": f"127.0.0.1:{port}", "workers": workers, "worker_class": "gevent", "keepalive": 60,
            "loglevel": "warning"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gunicorn_app", description=__doc__.split("\n")[0])
    parser.add_argument("app", help='WSGI app: "module:name" or "module:factory()"')
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--options", choices=["serve", "stock"], default="serve")
    parser.add_argument("--worker-class", choices=["sync", "gthread", "gevent"], default="gevent")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.options == "serve":
        options = serve_options(args.port, args.worker_class, args.workers, args.threads)
    else:
        options = stock_options(args.port, args.workers)
    WsgiSpecApplication(args.app, options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
