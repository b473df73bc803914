"""The ``serve`` command: what SageMaker runs as ``docker run IMAGE serve``.

It reads the settings, loads the model once (in the front end's master, before
the workers fork), builds the app and hands it to the front end (granian or
gunicorn, ``serve.frontends``). A setting or model
that cannot be used stops it with a one-line message and a non-zero exit code
(2: configuration, 1: model), before any port is opened; an address that cannot
be listened on (in use) exits 1 too, on either front end.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("serve")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="serve", description="Serve an XGBoost model (compiled with model-compile, or bare) with "
                                  "SageMaker's /ping, /invocations and /execution-parameters. "
                                  "Configured by environment variables (see README); options override them.")
    parser.add_argument("command", nargs="?", choices=["serve"],
                        help="accepted for `docker run IMAGE serve`; has no effect")
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help="model folder or model.tar.gz (default: SM_MODEL_DIR or /opt/ml/model)")
    parser.add_argument("--host", help="address to listen on (default: SERVE_BIND_HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default: SAGEMAKER_BIND_TO_PORT or 8080)")
    parser.add_argument("--workers", type=int, help="worker processes (default: one per usable vCPU)")
    parser.add_argument("--frontend", choices=["granian", "gunicorn"],
                        help="HTTP server (default: SERVE_FRONTEND, else the default front end)")
    parser.add_argument("--predictor", choices=["auto", "compiled", "stock"],
                        help="predictor (default: SERVE_PREDICTOR or auto)")
    parser.add_argument("--libsvm-index-base", type=int, choices=[0, 1],
                        help="where text/libsvm feature indices start, for every request "
                             "(default: SERVE_LIBSVM_INDEX_BASE or 0, as XGBoost reads LIBSVM)")
    parser.add_argument("--multi-model", action="store_true", default=None,
                        help="serve SageMaker's multi-model endpoint routes, models loaded at run time "
                             "from SERVE_MODEL_ROOT (default: SAGEMAKER_MULTI_MODEL)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # One OpenMP thread per worker, set before XGBoost (and its OpenMP runtime) is imported:
    # many single-thread workers beat few multi-thread ones for small requests, and an
    # OpenMP pool created in the master would not survive the fork. Set here, not at import,
    # so that importing this module changes nothing for its importer.
    os.environ["OMP_NUM_THREADS"] = "1"
    args = parse_args(argv)
    from serve.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    overrides = {name: value for name, value in (("host", args.host), ("port", args.port),
                                                 ("workers", args.workers), ("predictor", args.predictor),
                                                 ("libsvm_index_base", args.libsvm_index_base),
                                                 ("multi_model", args.multi_model), ("frontend", args.frontend))
                 if value is not None}
    settings = dataclasses.replace(settings, **overrides)
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")

    scratch = Path(tempfile.mkdtemp(prefix="serve-model-"))
    master = os.getpid()
    try:
        if settings.multi_model:
            from serve.multi_model import serve_multi_model

            return serve_multi_model(settings, scratch / "multi-model")
        model_dir = args.model or settings.model_dir
        try:
            model_dir = _model_folder(model_dir, scratch)
        except ValueError as exc:
            log.error("cannot read %s: %s", model_dir, exc)
            return 1
        return run(dataclasses.replace(settings, model_dir=model_dir))
    finally:
        # the front end's forked workers leave through this frame too: only the master cleans up.
        if os.getpid() == master:
            shutil.rmtree(scratch, ignore_errors=True)


def _model_folder(path: Path, scratch: Path) -> Path:
    """A folder as is; a model.tar.gz (a local run) extracted safely into ``scratch``."""
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        from model_core.artifact import safe_extract

        safe_extract(path, scratch)
        return scratch
    return path


def run(settings) -> int:
    """Load, build and serve until the front end stops; returns the exit code."""
    from serve.app import create_app
    from serve.cpus import available_cpus
    from serve.frontends import run_frontend
    from serve.gunicorn_conf import GRANIAN, plan_workers
    from serve.loading import ModelLoadError, load_model
    from serve.outputs import OutputError

    plan = plan_workers(settings, available_cpus())
    try:
        loaded = load_model(settings.model_dir, settings.predictor)
    except ModelLoadError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    try:
        app = create_app(loaded, settings, max_concurrent_transforms=plan.workers,
                         offload_large=plan.worker_class == "gevent")
    except OutputError as exc:   # selected outputs that do not fit the model
        log.error("cannot serve: %s", exc)
        return 2
    if plan.frontend == GRANIAN and plan.interface == "rsgi":   # a deadline on the body (serve.rsgi)
        from serve.rsgi import RSGIApp

        app = RSGIApp(app, plan.threads)
    elif plan.frontend == GRANIAN:   # WSGI: a watchdog ends body reads past the deadline
        from serve.body_deadline import BodyDeadline

        app.body_deadline = BodyDeadline(settings.timeout, threads=plan.threads)
    log.info("serving %s. %s, on %s:%d", loaded.describe(), plan.describe(), settings.host, settings.port)
    return run_frontend(lambda: app, settings, plan, loaded.describe())


if __name__ == "__main__":
    sys.exit(main())
