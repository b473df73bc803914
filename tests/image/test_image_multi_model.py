"""The serving image as a multi-model endpoint, as SageMaker runs one: the label that
declares it, SAGEMAKER_MULTI_MODEL=true, models extracted under /opt/ml/models/<name>/model
(read-only), loaded, invoked, listed and unloaded over HTTP (mms-container-apis)."""
from __future__ import annotations

import json
import shutil
import uuid

import numpy as np
import pytest

from tests.image import engine as eng
from tests.image.test_image_serving import read_rows, request, wait_until_healthy


@pytest.fixture(scope="module")
def models_root(compiled_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("opt-ml-models")
    for name in ("exchange-a", "exchange-b"):
        shutil.copytree(compiled_model["model_dir"], root / name / "model")
        for path in [root / name, root / name / "model", *(root / name / "model").iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    root.chmod(0o755)
    return root


def test_image_declares_multi_model_capability(engine, runtime_image):
    labels = json.loads(engine.inspect("{{json .Config.Labels}}", runtime_image))
    assert labels.get("com.amazonaws.sagemaker.capabilities.multi-models") == "true"


def test_load_invoke_list_unload_in_the_image(engine, runtime_image, models_root, compiled_model):
    port = eng.free_port()
    name = f"xgb-neo-serve-mme-{uuid.uuid4().hex[:10]}"
    engine.docker("create", "--name", name, "--network", "host", "-e", f"SAGEMAKER_BIND_TO_PORT={port}",
                  "-e", "SAGEMAKER_MULTI_MODEL=true", "-e", "SAGEMAKER_MODEL_SERVER_WORKERS=2",
                  "-v", f"{models_root}:/opt/ml/models:ro", runtime_image, "serve")
    engine.docker("start", name)
    try:
        assert wait_until_healthy(port, 60) is not None, engine.docker("logs", name, check=False).stderr[-3000:]
        rows, body = read_rows(compiled_model["source_dir"] / "sample.csv", 5)
        json_type = {"Content-Type": "application/json"}
        for model in ("exchange-a", "exchange-b"):
            status, answer, _ = request(port, "POST", "/models", json.dumps(
                {"model_name": model, "url": f"/opt/ml/models/{model}/model"}).encode(), json_type)
            assert status == 200, answer
        status, answer, _ = request(port, "POST", "/models", json.dumps(
            {"model_name": "exchange-a", "url": "/opt/ml/models/exchange-a/model"}).encode(), json_type)
        assert status == 409
        status, answer, _ = request(port, "POST", "/models", json.dumps(
            {"model_name": "x", "url": "/etc"}).encode(), json_type)
        assert status == 400 and b"outside the model root" in answer

        answers = []
        for _ in range(8):   # fresh connections: both workers answer
            status, answer, _ = request(port, "POST", "/models/exchange-b/invoke", body,
                                        {"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Model": "b.tar.gz"})
            assert status == 200, answer
            answers.append(np.array(answer.decode().replace("\n", ",").strip(",").split(","), dtype=np.float32))
        assert all(np.array_equal(a, answers[0]) for a in answers) and answers[0].shape == (5,)
        assert np.all((answers[0] > 0) & (answers[0] < 1))

        status, answer, _ = request(port, "GET", "/models")
        assert status == 200
        assert sorted(m["modelName"] for m in json.loads(answer)["models"]) == ["exchange-a", "exchange-b"]
        assert request(port, "DELETE", "/models/exchange-a")[0] == 200
        assert request(port, "DELETE", "/models/exchange-a")[0] == 404
        assert request(port, "POST", "/models/exchange-a/invoke", body, {"Content-Type": "text/csv"})[0] == 404
        assert request(port, "POST", "/models/exchange-b/invoke", body, {"Content-Type": "text/csv"})[0] == 200
        logs = engine.docker("logs", name).stderr
        assert "COMPILED LIBRARY NOT USED" not in logs and "Traceback" not in logs, logs[-3000:]
    finally:
        eng.remove_container(engine, name)
