"""Multi-model endpoints against real servers on loopback: SageMaker's load / list / describe /
unload / invoke contract (mms-container-apis), several worker processes sharing one
registry, memory budget (507), bad input and races."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from model_core.artifact import LIBRARY_NAME
from serve.loading import load_model
from tests.serve.conftest import csv_body, numbers, running_server, sample_rows, settled_worker_pids

MULTI = {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}


@pytest.fixture(scope="module")
def small(compiled_model_dir, sample_model_dir):
    """(compiled artifact folder, CSV lines, rows, in-process predictor)."""
    folder = compiled_model_dir("rtb-small")
    rows, lines = sample_rows(sample_model_dir, "rtb-small")
    return folder, lines, rows, load_model(folder).predictor


@pytest.fixture
def root(tmp_path, small):
    """A model root as SageMaker lays it out: /opt/ml/models/<name>/model, two models."""
    root = tmp_path / "models"
    for name in ("alpha", "beta"):
        shutil.copytree(small[0], root / name / "model")
    return root


def load(server, name, url, **kwargs):
    return requests.post(server.url + "/models", json={"model_name": name, "url": str(url)}, timeout=60, **kwargs)


def invoke(server, name, body, content_type="text/csv", accept=None, **headers):
    headers = {"Content-Type": content_type, **headers}
    if accept:
        headers["Accept"] = accept
    # a new connection each time: gunicorn's workers take turns accepting them
    return requests.post(f"{server.url}/models/{name}/invoke", data=body, headers=headers, timeout=60)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def loaded_by(server, name) -> set[int]:
    """The worker pids whose log says they loaded ``name``."""
    pattern = re.compile(rf"\[(\d+)\] \[INFO\] serve\.multi_model: model {re.escape(name)} loaded ")
    return {int(pid) for pid in pattern.findall(server.log())}


def log_shows(server, text: str, within_s: float = 5.0) -> bool:
    """Whether the server's log holds ``text`` within ``within_s``: a line written after the answer
    may come a moment after the client has it."""
    deadline = time.monotonic() + within_s
    while text not in server.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def mapping_pids(pids, needle: str) -> set[int]:
    return {pid for pid in pids if needle in Path(f"/proc/{pid}/maps").read_text()}


def test_load_invoke_in_every_worker_then_unload_frees_all(small, root, tmp_path):
    folder, lines, rows, predictor = small
    before = snapshot(root)
    with running_server(root, tmp_path / "server.log", SERVE_MODEL_ROOT=str(root), SERVE_ACCESS_LOG="true",
                        **MULTI) as server:
        pids = settled_worker_pids(server)
        assert len(pids) == 2
        response = load(server, "alpha", root / "alpha" / "model")
        assert response.status_code == 200, response.text
        assert response.json()["modelName"] == "alpha"

        # the load reached one worker; the other loads it from the registry on first use
        for i in range(500):
            got = numbers(invoke(server, "alpha", lines[i % 50], **{"X-Amzn-SageMaker-Target-Model": "alpha.tar.gz"}))
            assert np.array_equal(got, predictor.predict(rows[[i % 50]]))
            if loaded_by(server, "alpha") == set(pids):
                break
        assert loaded_by(server, "alpha") == set(pids), server.log()[-3000:]
        # the contract's header, logged (gunicorn writes an access line after sending the answer)
        assert log_shows(server, 'target_model="alpha.tar.gz"')
        assert "for target model alpha.tar.gz" in server.log()

        # /invocations' codecs, Accept, outputs and errors
        got = invoke(server, "alpha", csv_body(lines[:20]), accept="application/json")
        assert got.status_code == 200 and got.headers["Content-Type"].startswith("application/json")
        assert np.allclose([p["score"] for p in got.json()["predictions"]], predictor.predict(rows[:20]))
        assert invoke(server, "alpha", lines[0], content_type="image/png").status_code == 415
        assert invoke(server, "alpha", lines[0], accept="image/png").status_code == 406
        wrong = invoke(server, "alpha", "1,2,3")
        assert wrong.status_code == 400 and "7 values" in wrong.json()["error"]
        assert invoke(server, "alpha", "").status_code == 400

        described = requests.get(server.url + "/models/alpha", timeout=10).json()
        assert described["modelUrl"] == str(root / "alpha" / "model")
        memory = described["memory"]
        assert memory["library_bytes"] > 0 and memory["workers"] == 2
        assert memory["total_bytes"] == memory["library_bytes"] + 2 * memory["per_worker_bytes"]
        staged = re.search(r"staged/alpha-[0-9a-f]+", described["predictor"]).group(0)
        assert mapping_pids(pids, staged) == set(pids)      # both workers have the library mapped

        assert requests.delete(server.url + "/models/alpha", timeout=10).status_code == 200
        deadline = time.monotonic() + 10
        while mapping_pids(pids, staged) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert mapping_pids(pids, staged) == set()          # dlclosed in every worker, idle ones too
        for _ in range(10):
            gone = invoke(server, "alpha", lines[0])
            assert gone.status_code == 404 and "not loaded" in gone.json()["error"]
        assert requests.get(server.url + "/models", timeout=10).json() == {"models": []}
        assert settled_worker_pids(server) == pids
    assert snapshot(root) == before                          # the model root is only read


def test_bad_requests_get_clear_answers(small, root, tmp_path, bare_model_dir):
    folder, lines, rows, predictor = small
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copytree(folder, outside / "model")
    (root / "escape").symlink_to(outside / "model")
    (root / "garbage").mkdir()
    (root / "garbage" / "model.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    (root / "notmodel").mkdir()
    (root / "notmodel" / "xgboost-model").write_bytes(b"this is no model")
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    (root / "evil.tar.gz").write_bytes(evil.getvalue())
    shutil.copytree(bare_model_dir("rtb-small"), root / "bare" / "model")
    altered = root / "altered" / "model"
    shutil.copytree(folder, altered)
    (altered / LIBRARY_NAME).write_bytes((altered / LIBRARY_NAME).read_bytes()[:-16] + b"\0" * 16)
    before, outside_before = snapshot(root), snapshot(tmp_path / "outside")

    with running_server(root, tmp_path / "server.log", SERVE_MODEL_ROOT=str(root), **MULTI) as server:
        pids = settled_worker_pids(server)
        cases = [
            ("../alpha", root / "alpha" / "model", 400, "may hold only"),
            ("a/b", root / "alpha" / "model", 400, "may hold only"),
            ("..", root / "alpha" / "model", 400, "may hold only"),
            ("x", "/etc", 400, "outside the model root"),
            ("x", root / ".." / "outside" / "model", 400, "outside the model root"),
            ("x", root / "escape", 400, "outside the model root"),            # a link out of the root
            ("x", root / "missing" / "model", 404, "no model at url"),
            ("x", root / "garbage" / "model.tar.gz", 422, "cannot read the model archive"),
            ("x", root / "evil.tar.gz", 422, "absolute or parent path"),
            ("x", root / "notmodel", 422, "cannot load model 'x'"),
        ]
        for name, url, status, message in cases:
            response = load(server, name, url)
            assert response.status_code == status, (name, url, response.text)
            assert message in response.json()["error"], (name, url, response.text)
        for body in (b"not json", b"[1, 2]", b'{"model_name": "x"}', b'{"model_name": 3, "url": "a"}'):
            response = requests.post(server.url + "/models", data=body, timeout=10)
            assert response.status_code == 400 and "error" in response.json(), body

        assert load(server, "alpha", root / "alpha" / "model").status_code == 200
        again = load(server, "alpha", root / "beta" / "model")
        assert again.status_code == 409 and "already loaded" in again.json()["error"]
        assert requests.delete(server.url + "/models/nobody", timeout=10).status_code == 404
        assert invoke(server, "beta", lines[0]).status_code == 404
        assert requests.post(server.url + "/invocations", data=lines[0], timeout=10).status_code == 404
        assert requests.put(server.url + "/models/alpha", timeout=10).status_code == 405
        assert requests.get(server.url + "/models/alpha/invoke", timeout=10).status_code == 405
        assert requests.get(server.url + "/models/a%2Fb", timeout=10).status_code == 404

        # a bare training output is served by stock XGBoost; an altered library falls back loudly
        assert load(server, "bare", root / "bare" / "model").status_code == 200
        assert load(server, "altered", altered).status_code == 200
        assert "predictor stock" in requests.get(server.url + "/models/altered", timeout=10).json()["predictor"]
        assert "COMPILED LIBRARY NOT USED" in server.log()
        for name in ("alpha", "bare", "altered"):
            got = numbers(invoke(server, name, csv_body(lines[:5])))
            assert np.allclose(got, predictor.predict(rows[:5]), atol=1e-6), name
        assert requests.get(server.url + "/ping", timeout=2).status_code == 200
        assert settled_worker_pids(server) == pids
        assert "Traceback" not in server.log()
    assert snapshot(root) == before and snapshot(tmp_path / "outside") == outside_before
    assert not (tmp_path.parent / "evil.txt").exists()


def test_memory_budget_answers_507(small, root, tmp_path):
    library = (small[0] / LIBRARY_NAME).stat().st_size
    with running_server(root, tmp_path / "tiny.log", SERVE_MODEL_ROOT=str(root),
                        SERVE_MEMORY_BUDGET_MB=str(library / 2**20 / 2), **MULTI) as server:
        refused = load(server, "alpha", root / "alpha" / "model")
        assert refused.status_code == 507 and "not enough memory" in refused.json()["error"]
        assert requests.get(server.url + "/models", timeout=10).json() == {"models": []}

    with running_server(root, tmp_path / "probe.log", SERVE_MODEL_ROOT=str(root), **MULTI) as server:
        assert load(server, "alpha", root / "alpha" / "model").status_code == 200
        cost = requests.get(server.url + "/models/alpha", timeout=10).json()["memory"]["total_bytes"]
    # beta carries 50 MiB of extra files: its size alone (what the budget counts before loading)
    # fits the budget, but not beside alpha. Measured costs vary by load (heap reuse): the
    # margins are halves of alpha's cost, not exact figures.
    padding = 50 * 2**20
    (root / "beta" / "model" / "padding.bin").write_bytes(b"\0" * padding)
    with running_server(root, tmp_path / "budget.log", SERVE_MODEL_ROOT=str(root),
                        SERVE_MEMORY_BUDGET_MB=str((padding + cost / 2) / 2**20), **MULTI) as server:
        assert load(server, "alpha", root / "alpha" / "model").status_code == 200
        second = load(server, "beta", root / "beta" / "model")
        assert second.status_code == 507 and "unload a model" in second.json()["error"], second.text
        assert numbers(invoke(server, "alpha", small[1][0])).shape == (1,)   # the first keeps serving
        assert requests.delete(server.url + "/models/alpha", timeout=10).status_code == 200
        assert load(server, "alpha", root / "alpha" / "model").status_code == 200
        assert [m["modelName"] for m in requests.get(server.url + "/models", timeout=10).json()["models"]] == ["alpha"]


def test_list_pages(small, root, tmp_path):
    names = [f"m{i:02d}" for i in range(7)]
    with running_server(root, tmp_path / "server.log", SERVE_MODEL_ROOT=str(root), **MULTI) as server:
        for name in names:
            assert load(server, name, root / "alpha" / "model").status_code == 200
        seen, token, pages = [], None, 0
        while True:
            params = {"page_size": 3, **({"next_page_token": token} if token else {})}
            page = requests.get(server.url + "/models", params=params, timeout=10).json()
            seen += [model["modelName"] for model in page["models"]]
            pages += 1
            token = page.get("nextPageToken")
            if not token:
                break
        assert seen == names and pages == 3
        assert len(requests.get(server.url + "/models", timeout=10).json()["models"]) == 7
        assert requests.get(server.url + "/models?next_page_token=%%%", timeout=10).status_code == 400
        assert requests.get(server.url + "/models?page_size=0", timeout=10).status_code == 400


def test_races_of_load_unload_invoke(small, root, tmp_path):
    """Loads of one name at once: exactly one wins. Then loads, unloads and invokes of one model
    race while another model is invoked all along: only contract answers, the steady model
    always answers right, no worker dies, /ping stays healthy."""
    folder, lines, rows, predictor = small
    expect = predictor.predict(rows[:3])
    with running_server(root, tmp_path / "server.log", SERVE_MODEL_ROOT=str(root), **MULTI) as server:
        pids = settled_worker_pids(server)
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: load(server, "alpha", root / "alpha" / "model").status_code,
                                     range(8)))
        assert sorted(statuses) == [200] + [409] * 7, statuses

        stop = time.monotonic() + 8
        seen: dict[str, set[int]] = {"churn-load": set(), "churn-unload": set(), "churn-invoke": set()}

        def steady() -> int:
            count = 0
            while time.monotonic() < stop:
                assert np.array_equal(numbers(invoke(server, "alpha", csv_body(lines[:3]))), expect)
                count += 1
            return count

        def churn(kind: str) -> int:
            count = 0
            while time.monotonic() < stop:
                if kind == "churn-load":
                    status = load(server, "beta", root / "beta" / "model").status_code
                elif kind == "churn-unload":
                    status = requests.delete(server.url + "/models/beta", timeout=10).status_code
                else:
                    response = invoke(server, "beta", csv_body(lines[:3]))
                    status = response.status_code
                    if status == 200:
                        assert np.array_equal(numbers(response), expect)
                seen[kind].add(status)
                count += 1
            return count

        def ping() -> float:
            worst = 0.0
            while time.monotonic() < stop:
                started = time.monotonic()
                assert requests.get(server.url + "/ping", timeout=2).status_code == 200
                worst = max(worst, time.monotonic() - started)
                time.sleep(0.05)
            return worst

        with ThreadPoolExecutor(7) as pool:
            futures = [pool.submit(steady), pool.submit(steady), pool.submit(ping)] + [
                pool.submit(churn, kind) for kind in ("churn-load", "churn-load", "churn-unload", "churn-invoke")]
            results = [future.result() for future in futures]
        assert results[0] > 0 and results[2] < 2.0
        assert seen["churn-load"] <= {200, 409} and 200 in seen["churn-load"]
        assert seen["churn-unload"] <= {200, 404, 409} and 200 in seen["churn-unload"]
        assert seen["churn-invoke"] <= {200, 404}
        assert settled_worker_pids(server) == pids
        assert "Traceback" not in server.log() and " 500 " not in server.log()
        # every load here is compiled: a fallback warning could only come from a dropped raced load
        assert "COMPILED LIBRARY NOT USED" not in server.log()


def test_memory_module_reads_this_machine():
    from serve.memory import ModelMemory, anonymous_bytes, container_memory_limit, mapped_file_bytes

    assert container_memory_limit() > 64 * 2**20
    import mmap

    # A fresh anonymous mapping, touched: resident whatever malloc kept from earlier tests
    # (np.ones may reuse freed, still-resident heap in a long test session).
    before = anonymous_bytes()
    block = mmap.mmap(-1, 32 * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block.write(b"\1" * (32 * 2**20))
    assert anonymous_bytes() - before >= 30 * 2**20
    block.close()
    assert mapped_file_bytes(Path(np.__file__).parent / "nothing-mapped.so") == 0
    memory = ModelMemory(library_bytes=100, per_worker_bytes=10, workers=3, staged_bytes=1)
    assert memory.total_bytes == 131 and ModelMemory.from_dict(memory.to_dict()) == memory
