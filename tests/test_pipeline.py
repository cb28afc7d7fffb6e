"""edge/pipeline.py, a reading's path on the device after the bus: the telemetry policy
(on change beyond a deadband, at most every min_s, at least every heartbeat_s), detector
thresholds from PARAMS tables overridden by the config, profile modules loaded by name
(a missing one is an answer, a broken one is an error), and the same events under
MicroPython."""
from __future__ import annotations

import json

import pytest

from edge.codes import CODES, RAISE, REPORT, code_of
from edge.pipeline import Pipeline, Telemetry, load_module, merge_params
from edge.state import MemoryStore
from rig import run_micropython

T0 = 1_780_000_000
SITE = {"rated_speed": 1.75, "floors": [-1, 11], "utc_offset_s": 8 * 3600}
PARKED = dict(mode=0, dir=0, speed=0.0, floor=3, door=0, zone=1, occupied=0, fault=0)
TELE_ELEV = code_of("telemetry.elevator")
TELE_WATER = code_of("telemetry.water_meter")


def telemetry_times(rows, tele: Telemetry) -> list[int]:
    out: list = []
    for t, r in rows:
        tele.step(t, r, out)
    return [e[0] - T0 for e in out]


def elevator_tele() -> Telemetry:
    return Telemetry(TELE_ELEV, [f[0] for f in CODES[TELE_ELEV][2]], {"floor": 0, "door": 0}, 1, 60)


# ---- telemetry -----------------------------------------------------------------------

def test_a_still_sensor_sends_its_first_reading_then_a_heartbeat() -> None:
    rows = [(T0 + i, PARKED) for i in range(200)]
    assert telemetry_times(rows, elevator_tele()) == [0, 60, 120, 180]


def test_a_watched_change_is_sent_at_once_an_unwatched_one_waits() -> None:
    rows = [(T0 + i, dict(PARKED, floor=4 if i >= 10 else 3, speed=0.5 if i >= 20 else 0.0)) for i in range(40)]
    assert telemetry_times(rows, elevator_tele()) == [0, 10]


def test_changes_within_the_deadband_are_not_news() -> None:
    tele = Telemetry(TELE_WATER, ["total", "flow", "battery"], {"flow": 0.05}, 300, 900)
    rows = [(T0 + 60 * i, {"total": 1.0, "flow": 0.3 + (0.01 if i % 2 else 0.0), "battery": 3.6})
            for i in range(20)]
    assert telemetry_times(rows, tele) == [0, 900]


def test_no_two_samples_closer_than_min_s_whatever_changes() -> None:
    tele = Telemetry(TELE_WATER, ["total", "flow", "battery"], {"flow": 0.05}, 300, 900)
    rows = [(T0 + 60 * i, {"total": 1.0, "flow": float(i), "battery": 3.6}) for i in range(12)]
    assert telemetry_times(rows, tele) == [0, 300, 600]


def test_a_field_that_stops_answering_is_a_change_and_a_failed_poll_sends_nothing() -> None:
    rows = [(T0, PARKED), (T0 + 1, None), (T0 + 2, dict(PARKED, door=None)), (T0 + 3, dict(PARKED, door=None)),
            (T0 + 4, PARKED)]
    out: list = []
    tele = elevator_tele()
    for t, r in rows:
        tele.step(t, r, out)
    assert [(e[0] - T0, e[3][4]) for e in out] == [(0, 0), (2, None), (4, 0)]


def test_telemetry_values_are_in_wire_order() -> None:
    out: list = []
    elevator_tele().step(T0, dict(PARKED, speed=1.25, floor=7), out)
    assert out == [(T0, TELE_ELEV, REPORT, [0, 0, 1.25, 7, 0, 1, 0, 0])]


# ---- the whole path ------------------------------------------------------------------

def run(pipe: Pipeline, rows) -> list[tuple]:
    events = []
    for t, r in rows:
        events += [(e[0] - T0, CODES[e[1]][0], e[2]) for e in pipe.step(t, r)]
    return events


def test_the_profile_sets_the_telemetry_policy_and_the_detector_runs() -> None:
    pipe = Pipeline("elevator", SITE, None, MemoryStore())
    rows = [(T0 + i, PARKED if i < 10 else None) for i in range(300)]
    events = run(pipe, rows)
    assert events[0] == (0, "telemetry.elevator", REPORT)
    # the bus went silent at 10: comm loss from the common detectors, once, when the
    # silence is certain to reach 240 s (a poll failed at 249 cannot be answered before 250)
    assert [e for e in events if e[1] != "telemetry.elevator"] == [(249, "device.comm_loss", RAISE)]


def test_telemetry_can_be_turned_off() -> None:
    pipe = Pipeline("elevator", SITE, None, MemoryStore(), telemetry=False)
    assert run(pipe, [(T0 + i, PARKED) for i in range(120)]) == []


def test_a_config_override_changes_a_threshold() -> None:
    pipe = Pipeline("water_meter", {"utc_offset_s": 0}, {"comm_loss_s": 60}, MemoryStore(), telemetry=False)
    rows = [(T0, {"total": 1.0, "flow": 0.0, "battery": 3.6})] + [(T0 + 60 * i, None) for i in range(1, 4)]
    assert run(pipe, rows) == [(60, "device.comm_loss", RAISE)]


def test_a_profile_without_a_detector_still_watches_the_bus() -> None:
    pipe = Pipeline("no_such_profile", {}, None, MemoryStore())
    assert pipe.detector is None and pipe.telemetry is None
    assert run(pipe, [(T0 + 60 * i, None) for i in range(6)]) == [(180, "device.comm_loss", RAISE)]


# ---- parameters ----------------------------------------------------------------------

def test_params_take_defaults_in_table_order_then_the_overrides() -> None:
    assert merge_params([{"a": 1, "b": 2}, {"b": 3, "c": 4}], {"c": 5.5}) == {"a": 1, "b": 3, "c": 5.5}
    assert merge_params([{"a": 1}], None) == {"a": 1}


@pytest.mark.parametrize("overrides,message", [
    ({"a_s": 3, "nope": 1}, r"params.nope: unknown parameter; known: a_s, b_pct"),
    ({"a_s": "30"}, r"params.a_s: must be a number, got '30'"),
    ({"a_s": True}, r"params.a_s: must be a number, got True"),
    ({"a_s": None}, r"params.a_s: must be a number"),
])
def test_a_bad_override_is_named(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        merge_params([{"a_s": 10}, {"b_pct": 90}], overrides)


# ---- profile modules by name ---------------------------------------------------------

@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throwaway package `probe_pkg` with a good module, a broken one, and one whose
    missing dependency's name contains the module's own name."""
    root = tmp_path / "probe_pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "good.py").write_text("VALUE = 42\n")
    (root / "broken.py").write_text("import probe_pkg.not_written_yet\n")
    (root / "water.py").write_text("import probe_pkg.water_helpers\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "probe_pkg"
    import sys
    for name in [m for m in sys.modules if m.startswith("probe_pkg")]:
        del sys.modules[name]


def test_a_module_is_loaded_by_its_dotted_name() -> None:
    assert load_module("edge.profiles.water_meter").NAME == "water_meter"


def test_a_module_that_does_not_exist_is_none(package) -> None:
    assert load_module("probe_pkg.absent") is None
    assert load_module("edge.detect.no_such_profile") is None


def test_a_module_that_fails_to_import_is_an_error_not_a_missing_module(package) -> None:
    with pytest.raises(ImportError, match="not_written_yet"):
        load_module("probe_pkg.broken")
    # even when the missing piece is named after the module itself
    with pytest.raises(ImportError, match="water_helpers"):
        load_module("probe_pkg.water")
    assert load_module("probe_pkg.good").VALUE == 42


LOAD_SCRIPT = """
from edge.pipeline import load_module
for name in ("probe_pkg.absent", "probe_pkg.good", "probe_pkg.broken", "probe_pkg.water"):
    try:
        mod = load_module(name)
        print(name, "none" if mod is None else "loaded")
    except ImportError as e:
        print(name, "error")
"""


def test_micropython_tells_a_missing_module_from_a_broken_one(package, tmp_path) -> None:
    (tmp_path / "load_run.py").write_text(LOAD_SCRIPT)
    out = run_micropython(tmp_path / "load_run.py", paths=(str(tmp_path),)).split()
    assert out == ["probe_pkg.absent", "none", "probe_pkg.good", "loaded",
                   "probe_pkg.broken", "error", "probe_pkg.water", "error"]


# ---- under MicroPython ---------------------------------------------------------------

MP_SCRIPT = """
import json, sys
from edge.pipeline import Pipeline
from edge.state import MemoryStore
rows = json.load(open(sys.argv[1]))
pipe = Pipeline("elevator", json.load(open(sys.argv[2])), None, MemoryStore())
out = []
for t, r in rows:
    out += [[e[0], e[1], e[2], list(e[3])] for e in pipe.step(t, r)]
print(json.dumps(out))
"""


def test_micropython_gives_the_same_events(tmp_path) -> None:
    rows = [(T0 + i, dict(PARKED, floor=3 + i // 50) if i < 200 or i >= 500 else None) for i in range(700)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    (tmp_path / "site.json").write_text(json.dumps(SITE))
    (tmp_path / "pipe_run.py").write_text(MP_SCRIPT)
    got = run_micropython(tmp_path / "pipe_run.py", str(tmp_path / "rows.json"), str(tmp_path / "site.json"))
    pipe = Pipeline("elevator", SITE, None, MemoryStore())
    want = [[e[0], e[1], e[2], list(e[3])] for t, r in rows for e in pipe.step(t, r)]
    assert json.loads(got) == want
    assert {CODES[e[1]][0] for e in want} == {"telemetry.elevator", "device.comm_loss"}
