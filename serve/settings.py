"""Every environment variable the server reads, read once, typed and checked.

SageMaker configures a container through its environment. Reading it in one
place keeps the other modules free of ``os.environ`` and lets a wrong value
fail the start with a message naming the variable, instead of surfacing later
as an odd error on some request.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

# The SageMaker inference toolkit's names for the variables it shares with every SageMaker
# serving container (a constants module: importing it pulls in nothing heavy).
from sagemaker_inference import parameters as sm

from serve.scheduling import SCHED_POLICIES

PREDICTOR_CHOICES = ("auto", "compiled", "stock")
FRONTENDS = ("granian", "gunicorn")         # the HTTP servers serve runs on (serve.frontends)
GRANIAN_INTERFACES = ("wsgi", "rsgi")       # how granian calls serve's app (plain WSGI, or serve.rsgi)
WORKER_CLASSES = ("sync", "gthread", "gevent")   # gunicorn's

RESPONSE_TYPES = ("text/csv", "application/json", "application/jsonlines")
ONE_MB = 1024 * 1024


class SettingsError(ValueError):
    """An environment variable with a value the server cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    """The server's configuration. Field comments name the variable each comes from."""

    model_dir: Path = Path("/opt/ml/model")      # SM_MODEL_DIR
    host: str = "0.0.0.0"                        # SERVE_BIND_HOST (SageMaker needs all interfaces)
    port: int = 8080                             # SAGEMAKER_BIND_TO_PORT
    workers: int | None = None                   # SAGEMAKER_MODEL_SERVER_WORKERS (None: one per usable vCPU)
    timeout: int = 60                            # SAGEMAKER_MODEL_SERVER_TIMEOUT, seconds per request
    max_payload_bytes: int = 6 * ONE_MB          # SAGEMAKER_MAX_PAYLOAD_IN_MB
    default_accept: str = "text/csv"             # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
    outputs: tuple[str, ...] | None = None       # SAGEMAKER_INFERENCE_OUTPUT (None: the model's prediction)
    threshold: float = 0.5                       # SERVE_DECISION_THRESHOLD, for predicted_label
    predictor: str = "auto"                      # SERVE_PREDICTOR: auto | compiled | stock
    frontend: str | None = None                  # SERVE_FRONTEND: granian | gunicorn (None: derived)
    worker_class: str | None = None              # SERVE_WORKER_CLASS (gunicorn): sync | gthread | gevent (None: derived)
    threads: int | None = None                   # SERVE_THREADS, Python threads per gthread or granian worker
    runtime_threads: int | None = None           # SERVE_RUNTIME_THREADS (granian): Rust I/O threads per worker
    backpressure: int | None = None              # SERVE_BACKPRESSURE (granian): open connections per worker
    granian_interface: str = "wsgi"              # SERVE_GRANIAN_INTERFACE: wsgi | rsgi (no thread held by a slow client)
    sched_policy: str | None = None              # SERVE_SCHED_POLICY (granian): batch | normal (None: batch)
    keepalive: int = 75                          # SERVE_KEEPALIVE, seconds an idle connection stays open
    graceful_timeout: int = 20                   # SERVE_GRACEFUL_TIMEOUT, seconds to finish requests on SIGTERM
    access_log: bool = False                     # SERVE_ACCESS_LOG: one log line per request when true
    libsvm_index_base: int = 0                   # SERVE_LIBSVM_INDEX_BASE: 0 (XGBoost's reading) | 1 (LIBSVM files')
    log_level: int = logging.INFO                # SAGEMAKER_CONTAINER_LOG_LEVEL (name or number)
    batch: bool = False                          # SAGEMAKER_BATCH: running as a batch transform job
    max_concurrent_transforms: int | None = None  # SAGEMAKER_MAX_CONCURRENT_TRANSFORMS
    batch_strategy: str = "MULTI_RECORD"         # SAGEMAKER_BATCH_STRATEGY
    # Multi-model endpoints (serve.multi_model):
    multi_model: bool = False                    # SAGEMAKER_MULTI_MODEL: load models at run time
    model_root: Path = Path("/opt/ml/models")    # SERVE_MODEL_ROOT: the only folder models are loaded from
    memory_budget_mb: float | None = None        # SERVE_MEMORY_BUDGET_MB: what loaded models may cost
    memory_fraction: float = 0.7                 # SERVE_MEMORY_FRACTION: else this part of the memory limit

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Settings from ``environ`` (default ``os.environ``); unset or empty variables keep
        their defaults. Raises SettingsError naming the first variable that cannot be used."""
        env = _Env(os.environ if environ is None else environ)
        settings = cls(
            model_dir=Path(env.text("SM_MODEL_DIR", str(cls.model_dir))),
            host=env.text("SERVE_BIND_HOST", cls.host),
            port=env.integer(sm.BIND_TO_PORT_ENV, cls.port, low=1, high=65535),
            workers=env.integer(sm.MODEL_SERVER_WORKERS_ENV, None, low=1, high=1024),
            timeout=env.integer(sm.MODEL_SERVER_TIMEOUT_ENV, cls.timeout, low=1, high=3600),
            max_payload_bytes=int(env.number(sm.MAX_REQUEST_SIZE, 6, low=0.001, high=1024) * ONE_MB),
            default_accept=env.choice(sm.DEFAULT_INVOCATIONS_ACCEPT_ENV, cls.default_accept,
                                      RESPONSE_TYPES, lower=True),
            outputs=env.names("SAGEMAKER_INFERENCE_OUTPUT"),
            threshold=env.number("SERVE_DECISION_THRESHOLD", cls.threshold),
            predictor=env.choice("SERVE_PREDICTOR", cls.predictor, PREDICTOR_CHOICES, lower=True),
            frontend=env.choice("SERVE_FRONTEND", None, FRONTENDS, lower=True),
            worker_class=env.choice("SERVE_WORKER_CLASS", None, WORKER_CLASSES, lower=True),
            threads=env.integer("SERVE_THREADS", None, low=1, high=1024),
            runtime_threads=env.integer("SERVE_RUNTIME_THREADS", None, low=1, high=64),
            backpressure=env.integer("SERVE_BACKPRESSURE", None, low=1, high=100_000),
            granian_interface=env.choice("SERVE_GRANIAN_INTERFACE", cls.granian_interface, GRANIAN_INTERFACES,
                                         lower=True),
            sched_policy=env.choice("SERVE_SCHED_POLICY", None, SCHED_POLICIES, lower=True),
            keepalive=env.integer("SERVE_KEEPALIVE", cls.keepalive, low=0, high=3600),
            graceful_timeout=env.integer("SERVE_GRACEFUL_TIMEOUT", cls.graceful_timeout, low=1, high=3600),
            access_log=env.flag("SERVE_ACCESS_LOG", cls.access_log),
            libsvm_index_base=env.integer("SERVE_LIBSVM_INDEX_BASE", cls.libsvm_index_base, low=0, high=1),
            log_level=env.log_level(sm.LOG_LEVEL_ENV, cls.log_level),
            batch=env.flag("SAGEMAKER_BATCH", cls.batch),
            max_concurrent_transforms=env.integer("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", None, low=1, high=1024),
            batch_strategy=env.choice("SAGEMAKER_BATCH_STRATEGY", cls.batch_strategy,
                                      ("MULTI_RECORD", "SINGLE_RECORD"), lower=False),
            multi_model=env.flag("SAGEMAKER_MULTI_MODEL", cls.multi_model),
            model_root=Path(env.text("SERVE_MODEL_ROOT", str(cls.model_root))),
            memory_budget_mb=env.number("SERVE_MEMORY_BUDGET_MB", None, low=0.0),
            memory_fraction=env.number("SERVE_MEMORY_FRACTION", cls.memory_fraction, low=0.01, high=1.0),
        )
        if settings.threshold != settings.threshold:   # NaN would make every label 0
            raise SettingsError("SERVE_DECISION_THRESHOLD: must be a number, not NaN")
        # Knobs of the other front end would be silently ignored: refuse them instead.
        if settings.frontend == "granian" and settings.worker_class:
            raise SettingsError("SERVE_WORKER_CLASS: applies to SERVE_FRONTEND=gunicorn only (granian has "
                                "no worker classes)")
        if settings.frontend == "gunicorn" or settings.worker_class:
            for name, value in (("SERVE_RUNTIME_THREADS", settings.runtime_threads),
                                ("SERVE_BACKPRESSURE", settings.backpressure),
                                ("SERVE_SCHED_POLICY", settings.sched_policy),
                                ("SERVE_GRANIAN_INTERFACE", env.raw("SERVE_GRANIAN_INTERFACE"))):
                if value is not None:
                    raise SettingsError(f"{name}: applies to SERVE_FRONTEND=granian only")
        return settings


class _Env:
    """Typed reads of one environment mapping; each error names the variable."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def integer(self, name: str, default: int | None, *, low: int, high: int) -> int | None:
        return self._bounded(name, default, int, "a whole number", low, high)

    def number(self, name: str, default: float, *, low: float | None = None,
               high: float | None = None) -> float:
        return self._bounded(name, default, float, "a number", low, high)

    def _bounded(self, name: str, default, convert, kind: str, low, high):
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = convert(value)
        except ValueError:
            raise SettingsError(f"{name}={value!r}: must be {kind}") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise SettingsError(f"{name}={value!r}: must be between {low} and {high}")
        return number

    def choice(self, name: str, default: str | None, choices: tuple[str, ...], *, lower: bool) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        if lower:
            value = value.lower()
        if value not in choices:
            raise SettingsError(f"{name}={value!r}: must be one of {', '.join(choices)}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}={value!r}: must be true or false")

    def names(self, name: str) -> tuple[str, ...] | None:
        """A comma-separated list of names, lower-cased, blanks removed (SageMaker's style)."""
        value = self.raw(name)
        if value is None:
            return None
        items = tuple(item.strip().lower() for item in value.split(","))
        if not all(items):
            raise SettingsError(f"{name}={value!r}: has an empty item")
        if len(set(items)) != len(items):
            raise SettingsError(f"{name}={value!r}: names an item twice")
        return items

    def log_level(self, name: str, default: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if value.isdigit():
            return int(value)
        level = logging.getLevelName(value.upper())
        if not isinstance(level, int):
            raise SettingsError(f"{name}={value!r}: must be a level name (DEBUG, INFO, ...) or number")
        return level
