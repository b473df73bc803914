"""The servers compared over HTTP (the contenders), as commands that serve on a given loopback port.

* (a) ``serve`` with its default predictor choice (``auto``: the router);
* (b) ``serve`` forced to stock XGBoost (``--predictor stock``);
* (c) the stock-container equivalent (``bench.baselines.stock_app``) under the stock
      container's own gunicorn settings (gevent, one worker per CPU);
* (d) the hello-world app under ``serve``'s front end and settings (WSGI on gunicorn, WSGI or RSGI on granian, as ``serve``): Python's floor;
* (e), (f): (a) and (d) on the other front end (``other_frontend_plan``);
* (g), (h): (a) and (d) on granian's other interface (``other_interface``: RSGI when serve's
      default is granian's WSGI; ``granian_plan``);
* (i): the RSGI hello world that answers without awaiting the body: what granian's RSGI body
      read costs per request, the RSGI hello world ((d) or (h)) minus (i).

(a), (b) and (d) run with the same WorkerPlan, handed over the way ``serve`` reads it
(its environment and ``--workers``), (e) and (f) with the other front end's plan for as
many workers; (c) keeps the stock container's.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from serve.gunicorn_conf import WorkerPlan

SERVER_LABELS = {
    "a": "(a) serve, router",
    "b": "(b) serve, stock XGBoost",
    "c": "(c) stock-container equivalent",
    "d": "(d) hello-world WSGI",
    # (a) and (d) on the other front end (gunicorn + gevent when the default is granian, and
    # the other way round): the front ends side by side, each with its hello-world floor.
    "e": "(e) serve, router, other front end",
    "f": "(f) hello-world, other front end",
    # serve on granian's other interface (RSGI when the default is WSGI): the two side by side.
    "g": "(g) serve, router, other interface",
    "h": "(h) hello-world, other interface",
    # the hello world on granian's RSGI interface without reading the body: what the body read costs.
    "i": "(i) hello-world RSGI, body unread",
}


@dataclass(frozen=True)
class ServerCommand:
    key: str                    # a to h
    label: str
    plan: WorkerPlan
    argv: list[str]
    env: dict[str, str]


@dataclass
class Contender:
    """A server to start and search: its command, its port, what to send it and its labels."""
    command: ServerCommand
    port: int
    bodies: list[bytes]
    model: str
    rows: int


def serve_default_plan(cpus: int | None = None) -> WorkerPlan:
    """The worker plan ``serve`` picks by default on ``cpus`` vCPUs (default: this process's),
    within this machine's cgroup quota."""
    from serve.cpus import available_cpus
    from serve.gunicorn_conf import plan_workers
    from serve.settings import Settings

    return plan_workers(Settings.from_env({}), available_cpus(affinity=cpus))


def other_frontend_plan(plan: WorkerPlan) -> WorkerPlan:
    """The other front end's default plan for as many workers as ``plan``: how (e) and (f) run."""
    from serve.gunicorn_conf import DEFAULT_GRANIAN_INTERFACE, DEFAULT_WORKER_CLASS, GRANIAN, granian_threads

    if plan.frontend == GRANIAN:
        return WorkerPlan(DEFAULT_WORKER_CLASS, plan.workers, 1, cpus=plan.cpus)
    return WorkerPlan(GRANIAN, plan.workers, granian_threads(DEFAULT_GRANIAN_INTERFACE), cpus=plan.cpus)


def granian_plan(plan: WorkerPlan, interface: str) -> WorkerPlan:
    """granian on ``interface`` (wsgi or rsgi) for as many workers as ``plan`` (``plan`` itself when
    it is one): how (g), (h) and (i) run."""
    from serve.gunicorn_conf import GRANIAN, granian_threads

    if plan.frontend == GRANIAN and plan.interface == interface:
        return plan
    return WorkerPlan(GRANIAN, plan.workers, granian_threads(interface), cpus=plan.cpus, interface=interface)


def other_interface(plan: WorkerPlan) -> str:
    """granian's interface that ``plan`` does not use (rsgi for a WSGI or gunicorn plan): (g) and (h)'s."""
    from serve.gunicorn_conf import GRANIAN

    return "wsgi" if plan.frontend == GRANIAN and plan.interface == "rsgi" else "rsgi"


def stock_plan(cpus: int | None = None) -> WorkerPlan:
    """The stock container's worker plan: gevent, one worker per CPU."""
    return WorkerPlan("gevent", cpus or os.cpu_count() or 1, 1)


def _serve_env(plan: WorkerPlan) -> dict[str, str]:
    """The environment that gives ``serve``'s ``plan`` (with ``--workers``), quiet."""
    return {**plan.environment(), "SAGEMAKER_CONTAINER_LOG_LEVEL": "WARNING", "SERVE_ACCESS_LOG": "false"}


def serve_command(key: str, artifact_dir: Path, port: int, plan: WorkerPlan) -> ServerCommand:
    """(a), (b), (e) or (g): this project's ``serve`` on ``artifact_dir`` (an extracted model.tar.gz)."""
    predictor = {"a": "auto", "b": "stock", "e": "auto", "g": "auto"}[key]
    argv = [sys.executable, "-m", "serve.cli", "--model", str(artifact_dir), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(plan.workers), "--predictor", predictor]
    return ServerCommand(key, SERVER_LABELS[key], plan, argv, _serve_env(plan))


def stock_command(stock_dir: Path, port: int, cpus: int | None = None) -> ServerCommand:
    """(c): the stock-container equivalent on ``stock_dir`` (holding ``xgboost-model``)."""
    plan = stock_plan(cpus)
    argv = [sys.executable, "-m", "bench.gunicorn_app", "bench.baselines:stock_app()", "--options", "stock",
            "--port", str(port), "--workers", str(plan.workers)]
    return ServerCommand("c", SERVER_LABELS["c"], plan, argv,
                         {"BENCH_MODEL_DIR": str(stock_dir), "OMP_NUM_THREADS": "1"})


def hello_command(port: int, plan: WorkerPlan, app: str = "bench.baselines:hello_app", key: str = "d") -> ServerCommand:
    """(d) (or (f)): the hello-world app (or another WSGI ``app``) under serve's front end and
    settings for ``plan``."""
    argv = [sys.executable, "-m", "bench.gunicorn_app", app, "--options", "serve", "--port", str(port),
            "--workers", str(plan.workers)]
    return ServerCommand(key, SERVER_LABELS[key], plan, argv, _serve_env(plan))
