"""The baseline servers, served for real by gunicorn on loopback.

The stock-container equivalent must do the stock container's work and give XGBoost's
own predictions, with the stock container's status codes (sagemaker-contract.md:
empty body 204, unparseable body 415, predict failure 400, unsupported Accept 406).
"""
from __future__ import annotations

import numpy as np
import pytest
import requests
import xgboost as xgb

from bench.baselines import stock_csv_to_dmatrix
from bench.contenders import hello_command, stock_command
from bench.payloads import csv_body, read_sample_rows, rows_matrix
from bench.servers import free_port, running_server
from serve.gunicorn_conf import WorkerPlan


@pytest.fixture(scope="module")
def stock_server(bare_model_dir, tmp_path_factory):
    model_dir = bare_model_dir("rtb-large")
    port = free_port()
    command = stock_command(model_dir, port, cpus=1)
    with running_server("stock", command.argv, port, env=command.env,
                        log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server, model_dir


def test_stock_parser_reads_missing_values_as_nan():
    matrix = stock_csv_to_dmatrix("1,,3\n4,5,")
    assert (matrix.num_row(), matrix.num_col()) == (2, 3)


def test_stock_equivalent_predicts_what_xgboost_predicts(stock_server, sample_model_dir):
    server, model_dir = stock_server
    lines = read_sample_rows(sample_model_dir("rtb-large") / "sample.csv")[:20]
    response = requests.post(server.url + "/invocations", data=csv_body(lines),
                             headers={"Content-Type": "text/csv"}, timeout=10)
    assert response.status_code == 200, response.text
    got = np.array([float(v) for v in response.text.split()])
    booster = xgb.Booster()
    booster.load_model(bytearray((model_dir / "xgboost-model").read_bytes()))
    np.testing.assert_allclose(got, booster.inplace_predict(rows_matrix(lines, 60)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("body, headers, status", [
    (b"", {"Content-Type": "text/csv"}, 204),
    (b'{"instances": [[1, 2]]}', {"Content-Type": "application/json"}, 415),
    (b"a,b\n", {"Content-Type": "text/csv"}, 415),                         # not numbers
    # more columns than the model's 60: XGBoost refuses (fewer pass, as missing values,
    # in the stock container too: it checks the count only for pickled models)
    (b",".join([b"1"] * 61), {"Content-Type": "text/csv"}, 400),
    (b",".join([b"1"] * 61), {"Content-Type": "text/csv", "Accept": "image/png"}, 400),  # predict fails first
])
def test_stock_equivalent_status_codes(stock_server, body, headers, status):
    server, _ = stock_server
    response = requests.post(server.url + "/invocations", data=body, headers=headers, timeout=10)
    assert response.status_code == status


def test_stock_equivalent_refuses_unknown_accept(stock_server, sample_model_dir):
    server, _ = stock_server
    line = read_sample_rows(sample_model_dir("rtb-large") / "sample.csv")[0]
    response = requests.post(server.url + "/invocations", data=line,
                             headers={"Content-Type": "text/csv", "Accept": "image/png"}, timeout=10)
    assert response.status_code == 406


@pytest.mark.parametrize("app", ["bench.baselines:hello_app", "bench.baselines:flask_hello_app()"])
def test_hello_world_answers_a_constant(app, tmp_path):
    port = free_port()
    command = hello_command(port, WorkerPlan("sync", 1), app=app)
    with running_server("hello", command.argv, port, env=command.env, log_dir=tmp_path) as server:
        response = requests.post(server.url + "/invocations", data=b"1,2,3\n",
                                 headers={"Content-Type": "text/csv"}, timeout=10)
    assert (response.status_code, response.text) == (200, "0.5\n")
