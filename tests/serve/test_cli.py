"""The `serve` command refuses what it cannot serve before opening a port: one clear line,
exit code 2 for a setting, 1 for a model."""
import subprocess

import pytest

from tests.serve.conftest import REPO_ROOT, free_port, serve_command, server_env


def run_serve(model_dir, *args, **env):
    return subprocess.run(serve_command() + list(args), env=server_env(model_dir, free_port(), env), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("env, code, message", [
    ({"SAGEMAKER_BIND_TO_PORT": "eighty"}, 2, "SAGEMAKER_BIND_TO_PORT='eighty': must be a whole number"),
    ({"SERVE_PREDICTOR": "fast"}, 2, "SERVE_PREDICTOR='fast': must be one of auto, compiled, stock"),
    ({"SAGEMAKER_INFERENCE_OUTPUT": "predicted_score"}, 2, "do not fit objective 'binary:logistic'"),
    ({"SERVE_PREDICTOR": "compiled"}, 1, "holds no compiled artifact"),
])
def test_unusable_settings_stop_the_start(bare_model_dir, env, code, message):
    result = run_serve(bare_model_dir("rtb-small"), **env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "Listening at" not in result.stderr


def test_models_that_cannot_load_stop_the_start(tmp_path):
    result = run_serve(tmp_path / "nowhere")
    assert result.returncode == 1 and "does not exist" in result.stderr
    (tmp_path / "xgboost-model").write_bytes(b"PK\x03\x04 not a model")
    result = run_serve(tmp_path)
    assert result.returncode == 1 and "not an XGBoost model" in result.stderr
    assert "Traceback" not in result.stderr


def test_unsafe_tarball_is_refused(tmp_path):
    import io
    import tarfile

    tarball = tmp_path / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    result = run_serve(tmp_path, "--model", str(tarball))
    assert result.returncode == 1 and "parent path" in result.stderr
    assert not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize("frontend", ["granian", "gunicorn"])
def test_a_port_in_use_exits_1_with_one_line(bare_model_dir, frontend):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(serve_command() + ["--frontend", frontend],
                                env=server_env(bare_model_dir("rtb-small"), port, {}), cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "in use" in result.stderr.lower()


@pytest.mark.parametrize("env, message", [
    ({"SERVE_FRONTEND": "nginx"}, "SERVE_FRONTEND='nginx': must be one of granian, gunicorn"),
    ({"SERVE_FRONTEND": "granian", "SERVE_WORKER_CLASS": "gevent"}, "SERVE_WORKER_CLASS: applies to"),
])
def test_unusable_front_end_settings_exit_2(bare_model_dir, env, message):
    result = run_serve(bare_model_dir("rtb-small"), **env)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
