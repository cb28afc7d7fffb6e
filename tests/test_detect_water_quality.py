"""edge.detect.water_quality: synthetic river stations (tools/testbench/scenarios.py
Station) with every artifact a station's probes produce, and real pollution, run
through the pipeline as a board runs it, one reading a minute; and the labelled
synthetic corpus (tests/corpus-synth/water_quality) through the replay path."""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from edge.codes import RAISE, REPORT, code_of
from edge.detect import water_quality
from edge.pipeline import Pipeline
from edge.state import MemoryStore
from tools.testbench import scenarios
from tools.testbench.scenarios import H, Station

POLLUTION = code_of("wq.pollution")
HEALTH = code_of("device.sensor_health")
T0 = 1_780_000_000
SYNTH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus-synth", "water_quality")
KINDS = {"frozen": 1, "stuck": 2, "calibration": 3, "dry": 4}


def run(station: Station, days: float, cls: str | None = None, limits: dict | None = None):
    site = {"class": cls or station.cls, "limits": limits or scenarios.wq_limits(), "utc_offset_s": 28800}
    pipe = Pipeline("water_quality", site, None, MemoryStore(), telemetry=False)
    out = []
    for t, r in station.rows(days):
        out += [(e[0] - T0,) + e[1:] for e in pipe.step(T0 + t, r) if e[1] != code_of("device.comm_loss")]
    return out


def raises(out) -> list[float]:
    return [e[0] for e in out if e[1] == POLLUTION and e[2] == RAISE]


def reports(out) -> list[tuple]:
    return [e[3] for e in out if e[1] == HEALTH and e[2] == REPORT]


def judged(station: Station, out, days: float) -> None:
    """Every labelled incident raised within 1800 s of its start, nothing else raised,
    one health report per artifact episode, of its kind."""
    labels = station.labels("t", days)
    incidents = [i for i in labels["incidents"] if i["type"] == "wq.pollution"]
    got = raises(out)
    assert len(got) == len(incidents), (got, incidents)
    for t, inc in zip(got, incidents):
        assert inc["start"] <= t <= inc["start"] + 1800, (t, inc)
    kinds = sorted(k for k, _, _ in reports(out))
    assert kinds == sorted(KINDS[e["kind"]] for e in labels["episodes"]), reports(out)


def river(**kw) -> Station:
    return Station(**dict({"cls": "III", "seed": 3, "bubbles": 0}, **kw))


# ---------------------------------------------------------------- pollution
@pytest.mark.parametrize("kind,opt", [
    ("sewage", {"nh3n": 2.0, "tp": 0.4}),
    ("sewage", {"nh3n": 1.3, "tp": 0.15, "ramp": 5400, "do_drop": 0.5}),    # a slow one, NH3-N only
    ("acid", {"ph": 5.4}),
    ("alkali", {"ph": 9.6, "ramp": 1200}),
    ("anoxia", {"do": 2.5}),
])
def test_sustained_pollution_is_raised_within_1800_s(kind: str, opt: dict) -> None:
    s = river(plan=((kind, 10 * H, 5 * H, opt),))
    judged(s, run(s, 1), 1)


def test_the_configured_limits_override_the_table() -> None:
    # a site whose own class III NH3-N limit is 2.5 mg/L: a rise to 2.0 is within it
    s = river(plan=(("sewage", 10 * H, 5 * H, {"nh3n": 2.0, "tp": 0.15, "do_drop": 0.5}),))
    limits = scenarios.wq_limits()
    limits["III"] = dict(limits["III"], nh3n_max=2.5)
    assert raises(run(s, 1, limits=limits)) == []
    assert len(raises(run(s, 1))) == 1


def test_class_may_be_given_as_a_number() -> None:
    s = river(plan=(("sewage", 10 * H, 5 * H, {"nh3n": 1.3, "tp": 0.15, "do_drop": 0.5}),))
    assert len(raises(run(s, 1, cls=3))) == 1
    assert raises(run(s, 1, cls=4)) == []                  # class IV allows 1.5


def test_one_raise_per_incident_through_its_ups_and_downs() -> None:
    s = river(bubbles=20, flush=2 * H, plan=(("sewage", 10 * H, 6 * H, {"nh3n": 1.4, "tp": 0.3}),))
    out = run(s, 1)
    assert len(raises(out)) == 1
    assert [e[2] for e in out if e[1] == POLLUTION] == [RAISE, 2]


# ---------------------------------------------------------------- not pollution
@pytest.mark.parametrize("buffers,minutes", [
    ((6.86, 4.00, 9.18), 40), ((7.00, 4.00, 10.01), 40), ((4.00,), 40), ((9.18,), 40),
    ((6.86, 4.00, 9.18), 70),               # 20 minutes in each buffer, a rinse between
    ((6.92, 4.00, 9.33, 10.18), 90),        # the buffers' values at 10 C
])
def test_a_calibration_visit_is_one_report_not_an_alarm(buffers: tuple, minutes: int) -> None:
    s = river(plan=(("calibration", 10 * H, minutes * 60, {"buffers": buffers}),))
    out = run(s, 1)
    assert raises(out) == [] and [r[0] for r in reports(out)] == [3]


@pytest.mark.parametrize("hours,air", [(0.5, 5), (3, 8), (2, -3)])
def test_a_probe_out_of_the_water_is_one_report_not_an_alarm(hours: float, air: float) -> None:
    s = river(plan=(("dry", 10 * H, hours * H, {"air": air}),))
    out = run(s, 1)
    assert raises(out) == [] and reports(out) == [(4, water_quality.TURB, 0)]


def test_bubbles_and_analyser_flushes_are_not_pollution() -> None:
    s = river(bubbles=40, flush=3 * H)
    assert run(s, 2) == []


@pytest.mark.parametrize("ph_drift,nh3n_drift", [(-0.5, 0), (0.6, 0), (0, 0.4)])
def test_a_drift_across_the_limit_is_not_pollution(ph_drift: float, nh3n_drift: float) -> None:
    s = river(ph0=7.2, nh3n0=0.5, ph_drift=ph_drift, nh3n_drift=nh3n_drift)
    assert raises(run(s, 4)) == []


def test_a_frozen_register_is_one_report_for_the_device() -> None:
    s = river(flush=4 * H, plan=(("frozen", 6 * H, 8 * H, {}),))
    out = run(s, 1)
    assert raises(out) == [] and [r[:2] for r in reports(out)] == [(1, 255)]


@pytest.mark.parametrize("field,value", [("do", 0.0), ("ph", 7.31), ("do", 1.2)])
def test_a_stuck_probe_is_one_report_and_never_pollution(field: str, value: float) -> None:
    s = river(plan=(("stuck", 6 * H, 8 * H, {"field": field, "value": value}),))
    out = run(s, 1)
    assert raises(out) == []
    assert [r[:2] for r in reports(out)] == [(2, water_quality.FIELDS.index(field))]


def test_an_analyser_holding_its_result_is_judged_on_it() -> None:
    # a TP analyser giving one result an hour: the raise follows its first result
    # beyond the limit by confirm_s (the hour before it is beyond any detector)
    s = river(tp_cycle=3600, plan=(("sewage", 10 * H, 5 * H, {"nh3n": 0.6, "tp": 0.5, "do_drop": 0}),))
    first = next(t for t, r in river(tp_cycle=3600, plan=s.plan).rows(1) if r["tp"] > 0.2)
    got = raises(run(s, 1))
    assert len(got) == 1 and first < got[0] <= first + water_quality.PARAMS["confirm_s"] + 300


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 1439), st.sampled_from(water_quality.FIELDS + ("turb", "all")), st.floats(-50, 50))
def test_a_single_bad_reading_never_raises(at: int, field: str, value: float) -> None:
    rows = list(river().rows(1))
    t, r = rows[at]
    rows[at] = (t, None if field == "all" else dict(r, **{field: value}))
    site = {"class": "III", "utc_offset_s": 28800}
    pipe = Pipeline("water_quality", site, None, MemoryStore(), telemetry=False)
    for t, r in rows:
        assert [e for e in pipe.step(T0 + t, r) if e[1] == POLLUTION] == []


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(water_quality.CLASSES), st.sampled_from(
    ["sewage", "acid", "alkali", "anoxia"]), st.sampled_from(["calibration", "dry", "frozen", "stuck", None]))
def test_random_stations_raise_their_incident_and_nothing_else(seed: int, cls: str, kind: str, artifact) -> None:
    lim = scenarios.wq_limits()[cls]
    opt = {"sewage": {"nh3n": 2.5 * lim["nh3n_max"], "tp": 2 * lim["tp_max"]}, "acid": {"ph": 5.2},
           "alkali": {"ph": 9.7}, "anoxia": {"do": 0.4 * lim["do_min"]}}[kind]
    plan = ((kind, 30 * H, 5 * H, opt),)
    if artifact is not None:
        plan += ((artifact, 10 * H, 3 * H, {"field": "do", "value": 0.0}),)
    # a river that meets its class comfortably: cold enough for class I's DO
    s = Station(cls=cls, seed=seed, temp0=12.0, do_frac=0.95, nh3n0=0.4 * lim["nh3n_max"],
                tp0=0.4 * lim["tp_max"], bubbles=6, flush=4 * H, plan=plan)
    judged(s, run(s, 2), 2)


# ---------------------------------------------------------------- the replay path
def test_the_synthetic_corpus_is_what_the_generator_makes() -> None:
    for name in scenarios.WQ_STATIONS:
        with open(os.path.join(SYNTH, name + ".labels.json")) as fh:
            assert json.load(fh) == scenarios.water_quality(name)[2], "regenerate: scenarios.write_wq_corpus"


@pytest.mark.parametrize("rt", ["cpython", "micropython"])
def test_the_synthetic_corpus_through_replay(tmp_path, rt: str) -> None:
    from tools.testbench.replay import replay_all
    names = sorted(scenarios.WQ_STATIONS)
    if rt == "micropython":
        names = names[-1:]      # the board's runtime on one trace; the rest under CPython
    done = replay_all([os.path.join(SYNTH, n + ".jsonl.gz") for n in names], str(tmp_path), rt=rt)
    assert len(done) == len(names)
    for name in names:
        with open(os.path.join(SYNTH, name + ".labels.json")) as fh:
            labels = json.load(fh)
        with open(tmp_path / "water_quality" / (name + ".events.jsonl")) as fh:
            events = [json.loads(line) for line in fh]
        for typ in ("wq.pollution", "device.comm_loss"):
            got = [e["t"] for e in events if e["type"] == typ and e["action"] == "raise"]
            want = [i for i in labels["incidents"] if i["type"] == typ]
            assert len(got) == len(want), (name, typ, got, want)
            for t, inc in zip(got, want):
                assert inc["start"] <= t <= inc["start"] + (1800 if typ == "wq.pollution" else 600)
        health = sorted(e["values"]["kind"] for e in events if e["type"] == "device.sensor_health")
        assert health == sorted(KINDS[e["kind"]] for e in labels["episodes"]), (name, health)


# ---------------------------------------------------------------- the station's bus
def test_one_poll_reads_every_probe_and_a_silent_probe_fails_its_fields(tmp_path) -> None:
    # the simulator serves each probe of the map as its own slave (edge.reads.reads),
    # the agent's read() asks each in turn
    import threading
    from edge.reads import reads
    from edge.agent import Agent
    from edge.bus import Master
    from edge.hal import cpython as hal
    from edge.profiles import water_quality as profile
    from tools.testbench.simulate import run_simulator
    from tools.testbench.vbus import VirtualBus
    reading = {"ph": 7.41, "do": 8.23, "nh3n": 0.412, "tp": 0.064, "temp": 22.8, "turb": 5.0}
    trace = scenarios.write(str(tmp_path / "wq.jsonl.gz"), {"trace": "t", "profile": "water_quality"},
                            [(0, reading)])
    bus = VirtualBus().start()
    stop, ready = threading.Event(), threading.Event()
    sim = threading.Thread(target=run_simulator, args=("water_quality", trace, bus.b), daemon=True,
                           kwargs=dict(stop_event=stop, ready=ready, order="CDAB"))
    sim.start()
    uart = None
    try:
        assert ready.wait(10)
        uart = hal.open_uart({"port": bus.a, "baud": 9600, "parity": "E", "stop": 1})
        agent = Agent.__new__(Agent)     # only what read() uses
        agent.master, agent.prof, agent.faults = Master(uart, 9600, 150, 1), profile, 0
        agent.blocks, agent.slaves, agent.fields = reads({"profile": "water_quality", "bus": {"word_order": "CDAB"}})
        assert agent.slaves == [1, 2, 10, 3, 4]
        faults = []
        agent._fault = faults.append
        assert agent.read() == reading and faults == []
        agent.slaves = (1, 2, 11, 3, 4)     # the NH3-N probe is not at 11
        assert agent.read() == dict(reading, nh3n=None) and len(faults) == 1
    finally:
        if uart is not None:
            uart.close()
        stop.set()
        sim.join(10)
        bus.stop()
