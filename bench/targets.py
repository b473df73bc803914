"""The servers compared over HTTP, as commands that serve on a given loopback port.

* (a) ``serve`` with its default predictor choice (``auto``: the router);
* (b) ``serve`` forced to stock XGBoost (``--predictor stock``);
* (c) the stock-container equivalent (``bench.baselines.stock_app``) under the stock
      container's own gunicorn settings (gevent, one worker per CPU);
* (d) the hello-world WSGI app under ``serve``'s gunicorn settings: Python's floor.

(a), (b) and (d) run with the same WorkerConfig; (c) keeps the stock container's.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.servers import WorkerConfig

TARGETS = {
    "a": "(a) serve, router",
    "b": "(b) serve, stock XGBoost",
    "c": "(c) stock-container equivalent",
    "d": "(d) hello-world WSGI",
}


@dataclass(frozen=True)
class ServerCommand:
    key: str                    # a, b, c or d
    label: str
    config: WorkerConfig
    argv: list[str]
    env: dict[str, str]


def stock_config(cpus: int | None = None) -> WorkerConfig:
    """The stock container's worker plan: gevent, one worker per CPU."""
    return WorkerConfig("gevent", cpus or os.cpu_count() or 1, 1)


def serve_command(key: str, artifact_dir: Path, port: int, config: WorkerConfig) -> ServerCommand:
    """(a) or (b): this project's ``serve`` on ``artifact_dir`` (an extracted model.tar.gz)."""
    predictor = {"a": "auto", "b": "stock"}[key]
    argv = [sys.executable, "-m", "serve.cli", "--model", str(artifact_dir), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(config.workers), "--predictor", predictor]
    env = {"SERVE_WORKER_CLASS": config.worker_class, "SERVE_THREADS": str(config.threads),
           "SAGEMAKER_CONTAINER_LOG_LEVEL": "WARNING", "SERVE_ACCESS_LOG": "false"}
    return ServerCommand(key, TARGETS[key], config, argv, env)


def stock_command(stock_dir: Path, port: int, cpus: int | None = None) -> ServerCommand:
    """(c): the stock-container equivalent on ``stock_dir`` (holding ``xgboost-model``)."""
    config = stock_config(cpus)
    argv = [sys.executable, "-m", "bench.gunicorn_app", "bench.baselines:stock_app()", "--options", "stock",
            "--port", str(port), "--workers", str(config.workers)]
    return ServerCommand("c", TARGETS["c"], config, argv, {"BENCH_MODEL_DIR": str(stock_dir), "OMP_NUM_THREADS": "1"})


def hello_command(port: int, config: WorkerConfig, app: str = "bench.baselines:hello_app") -> ServerCommand:
    """(d): the hello-world app under serve's gunicorn settings for ``config``."""
    argv = [sys.executable, "-m", "bench.gunicorn_app", app, "--options", "serve", "--port", str(port),
            "--worker-class", config.worker_class, "--workers", str(config.workers),
            "--threads", str(config.threads)]
    return ServerCommand("d", TARGETS["d"], config, argv, {})
