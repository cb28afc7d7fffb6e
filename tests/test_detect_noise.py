"""edge.detect.noise: hand-made nights at a construction site, run through the detector
exactly as the pipeline does (one 10 s Leq a poll, local time UTC+8)."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from edge.codes import RAISE, CLEAR, REPORT, code_of
from edge.detect import common, noise
from edge.pipeline import merge_params

NIGHT = code_of("noise.night_construction")
HEALTH = code_of("device.sensor_health")
OFF = 8 * 3600
T0 = 1_780_000_000 - (1_780_000_000 + OFF) % 86400     # a local midnight
SITE = {"night": ["22:00", "06:00"], "night_limit_dba": 55, "utc_offset_s": OFF}
H = 3600


def detector(site=SITE, **over):
    return noise.Detector(site, merge_params([common.PARAMS, noise.PARAMS], over), None)


def local(hour: float, day: int = 0) -> float:
    return T0 + day * 86400 + hour * H


def background(hours: float, start_h: float = 0.0, seed: int = 1, level: float = 42.0):
    """Quiet city background: 10 s levels around `level`, a passing car now and then."""
    rnd = random.Random(seed)
    rows = []
    for i in range(int(hours * 360)):
        v = level + rnd.gauss(0, 1.2)
        if rnd.random() < 0.01:
            v = rnd.uniform(60, 75)
        rows.append((local(start_h) + i * 10, round(v, 1)))
    return rows


def overlay(rows, start: float, seconds: float, make):
    """Replace the levels in [start, start + seconds) by make(rnd, old level)."""
    rnd = random.Random(int(start))
    return [(t, round(make(rnd, v), 1) if start <= t < start + seconds else v) for t, v in rows]


def construction(rnd, v):
    return rnd.uniform(63, 84)       # machines, hammering, trucks on site


def run(rows, det=None):
    det = det or detector()
    out = []
    for t, v in rows:
        det.step(t, None if v is None else {"laeq": v}, out)
    return out


def raises(out, code=NIGHT):
    return [e[0] for e in out if e[1] == code and e[2] == RAISE]


def test_a_quiet_week_raises_nothing() -> None:
    assert raises(run(background(7 * 24))) == []


def test_night_construction_raises_within_900_s_and_clears_once() -> None:
    start = local(23.5)
    rows = overlay(background(30), start, 2 * H, construction)
    out = run(rows)
    assert [t - start for t in raises(out)] and 0 < raises(out)[0] - start <= 900
    clears = [e[0] for e in out if e[1] == NIGHT and e[2] == CLEAR]
    assert len(raises(out)) == 1 and len(clears) == 1 and clears[0] > start + 2 * H


def test_a_work_break_inside_the_night_is_one_episode() -> None:
    rows = overlay(background(30), local(23), H, construction)
    rows = overlay(rows, local(24.3), H, construction)      # 18 minutes of quiet between
    assert len(raises(run(rows))) == 1


def test_daytime_work_up_to_22_00_and_from_06_00_raises_nothing() -> None:
    rows = overlay(background(48), local(7), 15 * H - 60, construction)    # 07:00 to 21:59
    rows = overlay(rows, local(6, 1), 4 * H, construction)                  # 06:00 next day
    assert raises(run(rows)) == []


@pytest.mark.parametrize("minutes", [1, 3, 5, 6])
def test_a_siren_or_a_truck_is_not_construction(minutes: int) -> None:
    rows = overlay(background(30), local(2), minutes * 60, lambda rnd, v: rnd.uniform(78, 92))
    assert raises(run(rows)) == []


@pytest.mark.parametrize("level", [58, 61, 64])
def test_steady_rain_over_the_limit_for_hours_is_not_construction(level: float) -> None:
    def rain(rnd, v):
        return level + rnd.gauss(0, 0.6) if rnd.random() > 0.02 else rnd.uniform(68, 75)
    rows = overlay(background(30), local(0.5), 4 * H, rain)
    assert raises(run(rows)) == []


def test_a_steady_level_beyond_the_lmax_allowance_is_construction() -> None:
    # a generator or pump running all night at 75 dB(A): steady, but no weather is that loud
    rows = overlay(background(30), local(1), H, lambda rnd, v: 75 + rnd.gauss(0, 0.5))
    assert raises(run(rows))


def test_the_night_and_its_limit_come_from_the_config() -> None:
    site = dict(SITE, night=["23:00", "07:00"], night_limit_dba=45)
    early = overlay(background(30), local(22), 50 * 60, lambda rnd, v: rnd.uniform(53, 72))
    assert raises(run(early, detector(site))) == []                 # 22:00 is evening there
    late = overlay(background(30), local(6), 50 * 60, lambda rnd, v: rnd.uniform(53, 72))
    assert raises(run(late, detector(site)))                        # 06:00 is still night
    assert raises(run(late)) == []                                  # but not under GB 12523


def test_a_frozen_register_is_one_health_report_and_judges_nothing() -> None:
    rows = overlay(background(30), local(1), 2 * H, lambda rnd, v: 78.0)
    out = run(rows)
    assert raises(out) == []
    health = [e for e in out if e[1] == HEALTH]
    assert len(health) == 1 and health[0][2] == REPORT and health[0][3][:2] == (1, 0)


def test_glitches_and_failed_polls_raise_nothing() -> None:
    rnd = random.Random(5)
    rows = [(t, rnd.choice((0.0, 140.0, None)) if rnd.random() < 0.02 else v) for t, v in background(48)]
    assert raises(run(rows)) == []


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.floats(22.0, 28.0))
def test_raise_and_clear_alternate_and_construction_is_found(seed: int, start_h: float) -> None:
    rows = overlay(background(36, seed=seed), local(start_h), 1.5 * H, construction)
    out = run(rows)
    actions = [e[2] for e in out if e[1] == NIGHT]
    assert actions[:1] == [RAISE] and all(a != b for a, b in zip(actions, actions[1:]))
    assert 0 < raises(out)[0] - local(start_h) <= 900
