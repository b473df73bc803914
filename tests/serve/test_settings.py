"""serve.settings: every variable read, typed, and refused with its name when unusable."""
import logging
from pathlib import Path

import pytest

from serve.settings import ONE_MB, Settings, SettingsError


def test_defaults_match_the_sagemaker_contract():
    settings = Settings.from_env({})
    assert settings.model_dir == Path("/opt/ml/model")
    assert settings.port == 8080 and settings.host == "0.0.0.0"
    assert settings.timeout == 60
    assert settings.max_payload_bytes == 6 * ONE_MB
    assert settings.default_accept == "text/csv"
    assert settings.outputs is None and settings.threshold == 0.5
    assert settings.predictor == "auto" and settings.workers is None
    assert settings.libsvm_index_base == 0     # XGBoost's own reading of LIBSVM indices
    assert settings.graceful_timeout < 30   # SageMaker sends SIGKILL 30 s after SIGTERM


def test_every_variable_is_read():
    settings = Settings.from_env({
        "SM_MODEL_DIR": "/models/x", "SERVE_BIND_HOST": "127.0.0.1", "SAGEMAKER_BIND_TO_PORT": "9001",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "3", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "5",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "Application/JSON",
        "SAGEMAKER_INFERENCE_OUTPUT": "Predicted_Label, probability", "SERVE_DECISION_THRESHOLD": "0.07",
        "SERVE_PREDICTOR": "STOCK", "SERVE_WORKER_CLASS": "gthread", "SERVE_THREADS": "8",
        "SERVE_KEEPALIVE": "5", "SERVE_GRACEFUL_TIMEOUT": "10", "SERVE_ACCESS_LOG": "true",
        "SAGEMAKER_CONTAINER_LOG_LEVEL": "warning", "SAGEMAKER_BATCH": "true",
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "4", "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
        "SERVE_LIBSVM_INDEX_BASE": "1",
    })
    assert settings == Settings(
        model_dir=Path("/models/x"), host="127.0.0.1", port=9001, workers=3, timeout=5,
        max_payload_bytes=2 * ONE_MB, default_accept="application/json",
        outputs=("predicted_label", "probability"), threshold=0.07, predictor="stock",
        worker_class="gthread", threads=8, keepalive=5, graceful_timeout=10, access_log=True,
        log_level=logging.WARNING, batch=True, max_concurrent_transforms=4, batch_strategy="SINGLE_RECORD",
        libsvm_index_base=1)


def test_numeric_log_level_and_blank_values():
    settings = Settings.from_env({"SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_MODEL_SERVER_WORKERS": " "})
    assert settings.log_level == 20 and settings.workers is None


@pytest.mark.parametrize("name, value", [
    ("SAGEMAKER_BIND_TO_PORT", "http"), ("SAGEMAKER_BIND_TO_PORT", "70000"),
    ("SAGEMAKER_MODEL_SERVER_WORKERS", "0"), ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "lots"),
    ("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/html"), ("SERVE_PREDICTOR", "fastest"),
    ("SERVE_WORKER_CLASS", "eventlet"), ("SERVE_DECISION_THRESHOLD", "nan"), ("SERVE_ACCESS_LOG", "maybe"),
    ("SAGEMAKER_INFERENCE_OUTPUT", "probability,,raw_score"), ("SAGEMAKER_INFERENCE_OUTPUT", "probability,probability"),
    ("SAGEMAKER_CONTAINER_LOG_LEVEL", "chatty"), ("SERVE_LIBSVM_INDEX_BASE", "2"),
    ("SERVE_LIBSVM_INDEX_BASE", "auto"),
])
def test_unusable_values_are_refused_with_the_variable_name(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_multi_model_variables():
    assert Settings.from_env({}).multi_model is False
    settings = Settings.from_env({"SAGEMAKER_MULTI_MODEL": "TRUE", "SERVE_MODEL_ROOT": "/data/models",
                                  "SERVE_MEMORY_BUDGET_MB": "512", "SERVE_MEMORY_FRACTION": "0.5"})
    assert settings.multi_model and settings.model_root == Path("/data/models")
    assert settings.memory_budget_mb == 512 and settings.memory_fraction == 0.5
    for name, value in (("SAGEMAKER_MULTI_MODEL", "maybe"), ("SERVE_MEMORY_FRACTION", "1.5"),
                        ("SERVE_MEMORY_BUDGET_MB", "-1")):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})


def test_front_end_variables():
    settings = Settings.from_env({"SERVE_FRONTEND": "Granian", "SERVE_THREADS": "2", "SERVE_RUNTIME_THREADS": "3",
                                  "SERVE_BACKPRESSURE": "64"})
    assert (settings.frontend, settings.threads, settings.runtime_threads, settings.backpressure) == (
        "granian", 2, 3, 64)
    assert Settings.from_env({"SERVE_FRONTEND": "gunicorn", "SERVE_WORKER_CLASS": "sync"}).worker_class == "sync"
    assert Settings.from_env({}).granian_interface == "wsgi"
    assert Settings.from_env({"SERVE_GRANIAN_INTERFACE": "RSGI"}).granian_interface == "rsgi"
    assert Settings.from_env({"SERVE_SCHED_POLICY": "Normal"}).sched_policy == "normal"


def test_granian_plans_run_under_sched_batch_unless_told_otherwise():
    from serve.gunicorn_conf import plan_workers

    default = plan_workers(Settings.from_env({}), 2)
    normal = plan_workers(Settings.from_env({"SERVE_SCHED_POLICY": "normal"}), 2)
    assert (default.sched_policy, normal.sched_policy) == ("batch", "normal")
    assert "SERVE_SCHED_POLICY" not in default.environment()
    # the benchmark hands a plan over by its environment: the same plan comes back
    assert plan_workers(Settings.from_env(normal.environment()), 2) == normal


def test_granian_interface_picks_the_plan_threads_and_travels_in_the_plan_environment():
    from serve.gunicorn_conf import DEFAULT_GRANIAN_RSGI_THREADS, DEFAULT_GRANIAN_WSGI_THREADS, plan_workers

    wsgi = plan_workers(Settings.from_env({}), 2)
    rsgi = plan_workers(Settings.from_env({"SERVE_GRANIAN_INTERFACE": "rsgi"}), 2)
    assert (wsgi.interface, wsgi.threads, rsgi.interface, rsgi.threads) == (
        "wsgi", DEFAULT_GRANIAN_WSGI_THREADS, "rsgi", DEFAULT_GRANIAN_RSGI_THREADS)
    assert "SERVE_GRANIAN_INTERFACE" not in wsgi.environment() and rsgi.label().endswith(" rsgi")
    # the benchmark hands a plan over by its environment: the same plan comes back
    assert plan_workers(Settings.from_env(rsgi.environment()), 2) == rsgi


@pytest.mark.parametrize("env, name", [
    ({"SERVE_FRONTEND": "nginx"}, "SERVE_FRONTEND"),
    ({"SERVE_FRONTEND": "granian", "SERVE_WORKER_CLASS": "gevent"}, "SERVE_WORKER_CLASS"),
    ({"SERVE_FRONTEND": "gunicorn", "SERVE_BACKPRESSURE": "10"}, "SERVE_BACKPRESSURE"),
    ({"SERVE_WORKER_CLASS": "gthread", "SERVE_RUNTIME_THREADS": "2"}, "SERVE_RUNTIME_THREADS"),
    ({"SERVE_RUNTIME_THREADS": "0"}, "SERVE_RUNTIME_THREADS"),
    ({"SERVE_FRONTEND": "gunicorn", "SERVE_GRANIAN_INTERFACE": "wsgi"}, "SERVE_GRANIAN_INTERFACE"),
    ({"SERVE_GRANIAN_INTERFACE": "asgi"}, "SERVE_GRANIAN_INTERFACE"),
    ({"SERVE_FRONTEND": "gunicorn", "SERVE_SCHED_POLICY": "batch"}, "SERVE_SCHED_POLICY"),
    ({"SERVE_SCHED_POLICY": "fifo"}, "SERVE_SCHED_POLICY"),
])
def test_front_end_knobs_of_the_other_front_end_are_refused(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)
