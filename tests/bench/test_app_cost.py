"""bench.app_cost: ServeApp (bare, and as on granian's WSGI interface) and granian RSGI's RSGIApp timed in
process, on a real compiled model."""
from __future__ import annotations

from bench.app_cost import cold_call_us, measure, rsgi_call
from bench.payloads import read_sample_rows


def test_app_cost_times_the_rsgi_and_wsgi_paths_on_the_same_answer(deployed_model):
    model = deployed_model("rtb-small")
    steps = dict(measure(model.deployed, model.sample_csv, loops=50))
    # measure() itself checks that both paths answer what the codec writes for the model's score
    for name in ("RSGIApp (granian RSGI, opt-in), CSV row in, CSV score out (body read)",
                 "ServeApp on granian WSGI (the default: body read recorded for its deadline), CSV row in, "
                 "CSV score out",
                 "ServeApp, CSV row in, CSV score out (whole WSGI call)", "  decode_csv, one row"):
        assert steps[name] > 0


def test_each_step_is_timed_from_cold_caches_too(deployed_model):
    model = deployed_model("rtb-small")
    warm = measure(model.deployed, model.sample_csv, loops=50)
    cold = measure(model.deployed, model.sample_csv, evict_mb=1)
    assert [name for name, _ in cold] == [name for name, _ in warm]
    assert all(us > 0 for _, us in cold)


def test_a_cold_call_is_the_median_of_single_timed_calls():
    calls = []
    us = cold_call_us(lambda: calls.append(1), evict_mb=1, calls=7)
    assert len(calls) == 7 and 0 < us < 1_000


def test_the_hand_driven_rsgi_request_gets_the_apps_own_errors(deployed_model):
    from serve.app import create_app
    from serve.loading import load_model
    from serve.rsgi import RSGIApp
    from serve.settings import Settings

    model = deployed_model("rtb-small")
    app = RSGIApp(create_app(load_model(model.deployed), Settings.from_env({})), 1)
    line = read_sample_rows(model.sample_csv)[0].encode()
    status, body = rsgi_call(app, line, "text/csv")().answer
    assert status == 200 and 0 < float(body) < 1
    status, body = rsgi_call(app, b"1,2", "text/csv")().answer      # a row of the wrong width
    assert status == 400 and b"features" in body
    status, _ = rsgi_call(app, line, "application/x-unknown")().answer
    assert status == 415
