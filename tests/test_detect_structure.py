"""edge.detect.structure: a hand-made building that breathes with the sun, run through
the detector exactly as the pipeline does (one reading every 10 minutes, UTC+8)."""
from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from edge.codes import RAISE, CLEAR, REPORT, code_of
from edge.detect import common, structure
from edge.pipeline import merge_params

TREND = code_of("structure.tilt_trend")
VIB = code_of("structure.vibration")
HEALTH = code_of("device.sensor_health")
OFF = 8 * 3600
T0 = 1_780_000_000 - (1_780_000_000 + OFF) % 86400     # a local midnight
SITE = {"vib_limit_mm_s": 5.0, "tilt_limit_deg": 0.05, "settle_limit_mm": 3.0, "utc_offset_s": OFF}
DAY = 86400
P = 600


def detector(site=SITE, **over):
    return structure.Detector(site, merge_params([common.PARAMS, structure.PARAMS], over), None)


def building(days: float, seed: int = 1, swing: float = 1.0, moves=None):
    """Readings of a still building: a daily thermal swing (tilt 0.005 deg, crack 0.03 mm,
    settlement 0.12 mm in amplitude, times `swing`), weather that shifts it a little from
    day to day, sensor noise, and vibration well under the limit. moves: {field: f(t)}
    added to the readings (a trend, a knock)."""
    rnd = random.Random(seed)
    rows = []
    weather = [rnd.gauss(0, 0.3) for _ in range(int(days) + 2)]    # sunny or cloudy days
    for i in range(int(days * DAY / P)):
        t = T0 + i * P
        day, frac = divmod((t - T0) / DAY, 1)
        w = weather[int(day)] * (1 - frac) + weather[int(day) + 1] * frac
        sun = swing * (1 + w) * math.sin(2 * math.pi * ((t + OFF) % DAY) / DAY - 1.2)
        r = {"tilt_x": 0.21 + 0.005 * sun + rnd.gauss(0, 0.0004),
             "tilt_y": -0.14 + 0.004 * sun + rnd.gauss(0, 0.0004),
             "crack": 1.3 + 0.03 * sun + rnd.gauss(0, 0.003),
             "settle": -1.2 + 0.12 * sun + rnd.gauss(0, 0.02),
             "vib": round(abs(rnd.gauss(0.3, 0.3)), 2)}
        for f, move in (moves or {}).items():
            r[f] += move(t)
        rows.append((t, r))
    return rows


def ramp(start: float, per_day: float, days: float = 30):
    return lambda t: per_day * min(days, max(0.0, (t - start) / DAY))


def run(rows, det=None):
    det = det or detector()
    out = []
    for t, r in rows:
        det.step(t, r, out)
    return out


def raises(out, code):
    return [e[0] for e in out if e[1] == code and e[2] == RAISE]


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31), st.floats(1.0, 3.0))
def test_a_building_breathing_with_the_sun_raises_nothing(seed: int, swing: float) -> None:
    out = run(building(30, seed=seed, swing=swing))
    assert raises(out, TREND) == [] and raises(out, VIB) == []
    assert [e for e in out if e[1] == HEALTH] == []


@pytest.mark.parametrize("field,per_day", [("tilt_x", 0.03), ("tilt_y", -0.02), ("settle", 1.5)])
def test_steady_movement_raises_within_two_days(field: str, per_day: float) -> None:
    start = T0 + 10 * DAY + 5 * 3600
    out = run(building(30, moves={field: ramp(start, per_day, 6)}))
    got = raises(out, TREND)
    assert len(got) == 1 and 0 < got[0] - start <= 2 * DAY
    assert [e[0] for e in out if e[1] == TREND and e[2] == CLEAR][0] > start + 6 * DAY


@pytest.mark.parametrize("field,step", [("tilt_x", 0.3), ("tilt_y", -0.02), ("settle", 5.0)])
def test_a_knocked_sensor_is_one_health_report_not_a_trend(field: str, step: float) -> None:
    at = T0 + 12 * DAY + 7 * 3600
    out = run(building(30, moves={field: lambda t: step if t >= at else 0.0}))
    assert raises(out, TREND) == []
    health = [e for e in out if e[1] == HEALTH]
    assert len(health) == 1 and health[0][2] == REPORT and health[0][3][0] == 5
    assert at < health[0][0] <= at + 2 * 3600


def test_a_knock_during_a_trend_neither_hides_nor_repeats_it() -> None:
    start = T0 + 10 * DAY
    knock = start + 3 * DAY
    out = run(building(30, moves={"tilt_y": lambda t: ramp(start, 0.03, 6)(t) + (0.1 if t >= knock else 0)}))
    assert len(raises(out, TREND)) == 1


def test_single_spikes_in_any_field_raise_nothing() -> None:
    rnd = random.Random(3)
    rows = building(30)
    for i in rnd.sample(range(len(rows)), 60):
        f = rnd.choice(("tilt_x", "tilt_y", "crack", "settle", "vib"))
        rows[i][1][f] = rnd.choice((-9.5, 0.0, 8.2, 17.9))
    out = run(rows)
    assert raises(out, TREND) == [] and raises(out, VIB) == []


def pile_driving(rows, start: float, hours: float, seed: int = 4):
    rnd = random.Random(seed)
    for t, r in rows:
        if start <= t < start + hours * 3600 and rnd.random() < 0.85:
            r["vib"] = round(rnd.uniform(5.5, 15), 2)
    return rows


def test_repeated_vibration_raises_within_1800_s_once() -> None:
    start = T0 + 5 * DAY + 9 * 3600
    out = run(pile_driving(building(10), start, 6))
    got = raises(out, VIB)
    assert len(got) == 1 and 0 <= got[0] - start <= 1800


def test_vibration_spikes_an_hour_apart_are_not_repeated_vibration() -> None:
    rows = building(10)
    for k in range(0, 1400, 7):
        rows[k][1]["vib"] = 12.0
    assert raises(run(rows), VIB) == []


def test_a_frozen_logger_is_one_health_report_and_judges_nothing() -> None:
    rows = building(20)
    stale = dict(rows[1000][1])
    rows = [(t, dict(stale) if 1000 <= i < 1000 + 144 else r) for i, (t, r) in enumerate(rows)]
    out = run(rows)
    health = [e for e in out if e[1] == HEALTH]
    assert len(health) == 1 and health[0][3][0] == 1
    assert raises(out, TREND) == []


def test_failed_polls_and_an_outage_raise_nothing() -> None:
    rows = building(30)
    rows = [(t, None if 3000 <= i < 3030 or i % 50 == 0 else r) for i, (t, r) in enumerate(rows)]
    out = run(rows)
    assert raises(out, TREND) == [] and raises(out, VIB) == []


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31), st.floats(0.02, 0.06), st.floats(3.0, 12.0))
def test_trends_are_found_and_raise_and_clear_alternate(seed: int, per_day: float, start_day: float) -> None:
    start = T0 + start_day * DAY
    out = run(building(24, seed=seed, moves={"tilt_x": ramp(start, per_day, 5)}))
    actions = [e[2] for e in out if e[1] == TREND]
    assert actions[:1] == [RAISE] and all(a != b for a, b in zip(actions, actions[1:]))
    assert 0 < raises(out, TREND)[0] - start <= 2 * DAY
