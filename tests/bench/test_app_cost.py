"""bench.app_cost: ServeApp (bare, and as on granian's WSGI interface) and granian RSGI's RSGIApp timed in
process, on a real compiled model."""
from __future__ import annotations

import os
import resource
import time

import pytest

from bench.app_cost import cold_call_us, main, measure, rsgi_call
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


def test_an_idle_call_comes_after_its_sleep():
    slept_before = []
    last_return = [0.0]

    def call():
        slept_before.append(time.perf_counter() - last_return[0])
        last_return[0] = time.perf_counter()

    us = cold_call_us(call, idle_us=3000, calls=5)
    # every call but the first came at least the 3 ms sleep after the one before
    assert len(slept_before) == 5 and min(slept_before[1:]) >= 0.003 and 0 < us < 1_000


def _voluntary_switches() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


@pytest.mark.parametrize("spin", [False, True])
def test_a_spinning_wait_stays_awake_and_a_sleeping_one_gives_up_the_vcpu(spin):
    waited_before = []
    last_return = [0.0]

    def call():
        waited_before.append(time.perf_counter() - last_return[0])
        last_return[0] = time.perf_counter()

    cold_call_us(lambda: None, calls=1)   # its first call imports numpy: file reads may sleep
    switches = _voluntary_switches()
    cold_call_us(call, idle_us=500, calls=5, spin=spin)
    switches = _voluntary_switches() - switches
    # the same wait either way; only the sleeping one left the vCPU, once per call (2.5 ms of
    # spinning in all: under the interpreter's 5 ms switch interval, so no GIL hand-off either)
    assert min(waited_before[1:]) >= 0.0005
    assert (switches <= 1) if spin else (switches >= 5)


def test_spin_prints_an_awake_wait_and_needs_idle_us(deployed_model, capsys):
    model = deployed_model("rtb-small")
    before = os.sched_getaffinity(0)
    try:
        assert main([str(model.deployed), "--sample", str(model.sample_csv), "--idle-us", "50", "--spin"]) == 0
    finally:
        os.sched_setaffinity(0, before)
    assert f"after spinning 50 us on vCPU {min(before)}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(model.deployed), "--spin"])


def test_idle_us_pins_to_one_vcpu_and_prints_each_step(deployed_model, capsys):
    model = deployed_model("rtb-small")
    before = os.sched_getaffinity(0)
    try:
        assert main([str(model.deployed), "--sample", str(model.sample_csv), "--idle-us", "50"]) == 0
        assert os.sched_getaffinity(0) == {min(before)}
    finally:
        os.sched_setaffinity(0, before)
    out = capsys.readouterr().out
    assert f"after sleeping 50 us on vCPU {min(before)}" in out and "decode_csv, one row" in out


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
