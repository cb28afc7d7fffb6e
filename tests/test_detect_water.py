"""edge.detect.water_meter: hand-made households and faults, run through the detector
exactly as the pipeline does (one reading a minute, local time UTC+8)."""
from __future__ import annotations

import random

import pytest

from hypothesis import given, settings, strategies as st

from edge.codes import RAISE, CLEAR, REPORT, code_of
from edge.detect import common, water_meter
from edge.pipeline import merge_params

INACT = code_of("water.inactivity")
CF = code_of("water.continuous_flow")
LEAK = code_of("water.leak")
GLITCH = code_of("water.meter_glitch")
HEALTH = code_of("device.sensor_health")
OFF = 8 * 3600
T0 = 1_780_000_000 - (1_780_000_000 + OFF) % 86400     # a local midnight
SITE = {"resolution": 0.001, "occupants": 1, "utc_offset_s": OFF}
H = 3600


def detector(store=None, site=SITE, **over):
    return water_meter.Detector(site, merge_params([common.PARAMS, water_meter.PARAMS], over), store)


def household(days: float, wake_h: float, sleep_h: float, seed: int = 1, stop_at: float | None = None,
              leak: float = 0.0, day_out: dict | None = None, total0: float = 100.0):
    """Readings of one resident: awake from wake_h to sleep_h local (may wrap midnight),
    a use of 1-4 minutes every 20-90 minutes while awake, none asleep, none after stop_at
    (the fall), none during day_out {day: (start_h, hours)}. leak adds a steady m3/h."""
    rnd = random.Random(seed)
    total = total0
    next_use = T0
    use_left = 0
    rows = []
    for i in range(int(days * 1440)):
        t = T0 + i * 60
        hod = ((t + OFF) % 86400) / H
        day = int((t - T0) // 86400)
        awake = (wake_h <= hod < sleep_h) if wake_h < sleep_h else (hod >= wake_h or hod < sleep_h)
        if day_out and day in day_out:
            s, n = day_out[day]
            if s <= hod < s + n:
                awake = False
        flow = leak
        if use_left == 0 and awake and t >= next_use and (stop_at is None or t < stop_at):
            use_left = rnd.randint(1, 4)
            next_use = t + rnd.randint(20, 90) * 60
        if not awake and next_use < t:
            next_use = t + rnd.randint(5, 30) * 60     # first use soon after waking
        if use_left:
            use_left -= 1
            flow += rnd.uniform(0.25, 0.6)
        total += flow / 60
        rows.append((t, {"total": round(total, 3), "flow": round(flow, 4), "battery": 3.6}))
    return rows


def run(rows, det=None):
    det = det or detector()
    out: list[tuple] = []
    for t, r in rows:
        det.step(t, r, out)
    return out, det


def raises(out, code):
    return [e[0] for e in out if e[1] == code and e[2] == RAISE]


def alternate(out) -> bool:
    """Each alarm's raises and clears alternate, starting with a raise (reports, such as
    device.sensor_health, are one-off facts and not part of it)."""
    by: dict[int, list[int]] = {}
    for e in out:
        if e[2] != REPORT:
            by.setdefault(e[1], []).append(e[2])
    return all(a == [RAISE, CLEAR] * (len(a) // 2) + [RAISE] * (len(a) % 2) for a in by.values())


def local(day: int, hour: float) -> float:
    return T0 + day * 86400 + hour * H


# ---------------------------------------------------------------- normal life
def test_normal_household_raises_nothing() -> None:
    out, det = run(household(10, 6.5, 22))
    assert out == []
    assert det.habit.days() >= 7


def test_tap_left_open_raises_continuous_flow_and_clears() -> None:
    rows = household(2, 6.5, 22)
    start = local(1, 10)
    for k, (t, r) in enumerate(rows):
        if start <= t < start + 3 * H:
            r["flow"] = 0.8
    total = rows[0][1]["total"]
    for t, r in rows:                       # rebuild a total that counts the tap
        total += r["flow"] / 60
        r["total"] = round(total, 3)
    out, _ = run(rows)
    cf = raises(out, CF)
    assert len(cf) == 1 and start + 4200 <= cf[0] <= start + 4200 + 120
    assert [e[2] for e in out if e[1] == CF] == [RAISE, CLEAR]
    assert raises(out, LEAK) == []


def test_long_shower_is_not_continuous_flow() -> None:
    rows = [(T0 + i * 60, {"total": 100 + (0.5 * i / 60 if i < 50 else 0.5 * 50 / 60),
                           "flow": 0.5 if i < 50 else 0.0, "battery": 3.6}) for i in range(200)]
    out, _ = run(rows)
    assert raises(out, CF) == []


def test_cistern_leak_raises_leak_not_continuous_flow() -> None:
    rows = household(4, 6.5, 22, leak=0.02)
    out, _ = run(rows)
    assert len(raises(out, LEAK)) == 1
    assert raises(out, LEAK)[0] <= T0 + 6 * H + 3600      # the first still hour after six
    assert raises(out, CF) == []
    assert raises(out, INACT) == []


def test_fall_during_a_leak_still_raises_inactivity() -> None:
    stop = local(3, 12)
    out, _ = run(household(5, 6.5, 22, leak=0.02, stop_at=stop))
    r = raises(out, INACT)
    assert len(r) == 1 and stop < r[0] <= stop + 12 * H


def coarse(rows, res: float):
    """The same household read through a meter that counts in steps of res m3."""
    return [(t, r if r is None else dict(r, total=round(int(r["total"] / res + 1e-9) * res, 3)))
            for t, r in rows]


def meter(days: int, uses, res: float = 0.001, stop_at: float | None = None):
    """Readings of a meter counting in steps of res m3, for uses(day) -> [(local hour,
    minutes, m3/h)] each day, none from stop_at on."""
    flows = {}
    for day in range(days):
        for hour, minutes, flow in uses(day):
            t0 = local(day, hour)
            for k in range(minutes):
                if stop_at is None or t0 + k * 60 < stop_at:
                    flows[int(t0 + k * 60)] = flow
    total = 100.0
    rows = []
    for i in range(days * 1440):
        t = T0 + i * 60
        flow = flows.get(t, 0.0)
        total += flow / 60
        rows.append((t, {"total": round(int(total / res + 1e-9) * res, 3), "flow": flow, "battery": 3.6}))
    return rows


def evening_handwash(day: int):
    # meals at 7, 12 and 18, a wash of a few litres at 21:30, asleep until 7
    return [(7, 3, 0.45), (12, 3, 0.45), (18, 3, 0.45), (21.5, 1, 0.2)]


def test_a_meter_counting_10_litre_steps_hides_no_use() -> None:
    # the 21:30 wash often leaves a 0.01 m3 total unmoved: only the flow register shows
    # it, on one poll; without it the night looks 13 h long
    site = dict(SITE, resolution=0.01)
    out, _ = run(meter(14, evening_handwash, 0.01), detector(site=site))
    assert out == []
    stop = local(10, 21.6)
    r = raises(run(meter(14, evening_handwash, 0.01, stop), detector(site=site))[0], INACT)
    assert len(r) == 1 and stop < r[0] <= stop + 12 * H


def shift_worker(day: int):
    """A week of days (hourly uses 7-22), then nights: out 20:00-06:30, asleep 08-15:30."""
    if day < 8:
        return [(h, 2, 0.4) for h in range(7, 23)]
    return [(h, 2, 0.4) for h in (15.5, 16.5, 17.5, 18.5, 19.75)] + [(6.5, 3, 0.5), (7.5, 2, 0.4)]


def test_a_household_turning_to_night_shifts_raises_nothing() -> None:
    # its first nights out start at an hour the habit knows only short spells from
    out, _ = run(meter(16, shift_worker))
    assert out == []
    stop = local(13, 19.8)
    r = raises(run(meter(16, shift_worker, stop_at=stop))[0], INACT)
    assert len(r) == 1 and stop < r[0] <= stop + 12 * H


# ---------------------------------------------------------------- meter faults
def frozen_total(rows, start: int, n: int):
    """The total register stands still for n polls from start, then catches up."""
    for t, r in rows[start:start + n]:
        r["total"] = rows[start][1]["total"]
    return rows


def test_frozen_total_with_flow_is_one_health_report_not_an_alarm() -> None:
    rows = [(T0 + i * 60, {"total": 100.0, "flow": 0.6, "battery": 3.6}) for i in range(300)]
    out, _ = run(rows)
    assert raises(out, CF) == [] and raises(out, LEAK) == [] and raises(out, GLITCH) == []
    h = [e for e in out if e[1] == HEALTH]
    assert len(h) == 1 and h[0][2] == REPORT and h[0][3][:2] == (1, 0)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_total_frozen_for_hours_then_caught_up_is_one_report_per_episode(seed: int) -> None:
    rows = household(4, 6.5, 22, seed=seed)
    frozen_total(rows, 1440 + 8 * 60, 9 * 60)            # 08:00-17:00 on day 1
    frozen_total(rows, 2 * 1440 + 7 * 60, 14 * 60)       # 07:00-21:00 on day 2
    out, _ = run(rows)
    assert [e[2] for e in out] == [REPORT, REPORT] and all(e[1] == HEALTH for e in out)


def test_meter_reset_backwards_is_followed_and_reported() -> None:
    rows = household(2, 6.5, 22)
    for t, r in rows[1500:]:
        r["total"] = round(r["total"] - 90, 3)          # meter replaced with a lower reading
    out, det = run(rows)
    g = [e for e in out if e[1] == GLITCH and e[2] == RAISE]
    assert len(g) == 1 and g[0][3][0] == 1
    assert raises(out, INACT) == [] and raises(out, CF) == []
    assert det.last_use > rows[1500][0]                  # uses seen again after the reset


def test_comm_loss_does_not_hide_use_or_invent_it() -> None:
    rows = household(2, 6.5, 22)
    for k in range(600, 700):                           # 100 minutes of failed polls by day
        rows[k] = (rows[k][0], None)
    out, _ = run(rows)
    assert out == []


# ---------------------------------------------------------------- properties
GLITCHES = ("null", "total_up", "total_down", "flow_spike", "flow_null", "total_null")


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 1439), st.sampled_from(GLITCHES), st.integers(1, 50))
def test_single_sample_glitch_never_raises(at: int, kind: str, seed: int) -> None:
    rows = household(1, 6.5, 22, seed=seed)
    t, r = rows[at]
    r = dict(r)
    if kind == "null":
        r = None
    elif kind == "total_up":
        r["total"] = r["total"] + 573.2
    elif kind == "total_down":
        r["total"] = r["total"] - 0.04
    elif kind == "flow_spike":
        r["flow"] = 31.9
    elif kind == "flow_null":
        r["flow"] = None
    else:
        r["total"] = None
    rows[at] = (t, r)
    out, _ = run(rows)
    assert out == []


@pytest.mark.parametrize("kind", ["total_up", "total_down", "null", "total_null"])
@pytest.mark.parametrize("at", [0, 1])
def test_glitch_in_the_first_readings_after_boot_never_raises(kind: str, at: int) -> None:
    # found by the property above: a total 573 m3 too high in the very first reading
    # became the reference, and every true reading after it was a meter "reset"
    rows = household(1, 6.5, 22, seed=1)
    t, r = rows[at]
    r = None if kind == "null" else dict(r)
    if kind == "total_up":
        r["total"] += 573.2
    elif kind == "total_down":
        r["total"] -= 0.04
    elif kind == "total_null":
        r["total"] = None
    rows[at] = (t, r)
    out, _ = run(rows)
    assert out == []


reading = st.one_of(
    st.none(),
    st.fixed_dictionaries({
        "total": st.one_of(st.none(), st.floats(99.0, 101.0)),
        "flow": st.one_of(st.none(), st.sampled_from([0.0, 0.0, 0.003, 0.02, 0.3, 0.9, 40.0])),
        "battery": st.just(3.6),
    }),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), reading), min_size=1, max_size=300))
def test_raise_and_clear_alternate_on_random_sequences(steps) -> None:
    det = detector(learn_days=0, inact_max_s=7200, inact_min_s=600, cf_s=600, leak_s=1800,
                   glitch_persist_s=120)
    out: list[tuple] = []
    t = T0
    for dt, r in steps:
        t += dt
        det.step(t, r, out)
    assert alternate(out)


def test_a_total_that_cannot_be_read_while_water_flows_is_no_frozen_register() -> None:
    # found by test_raise_and_clear_alternate_on_random_sequences: the total read, then
    # unknown (NaN, a failed field) while the flow register showed water, was reported
    # as a frozen register after three polls
    det = detector(learn_days=0, inact_max_s=7200, inact_min_s=600, cf_s=600, leak_s=1800,
                   glitch_persist_s=120)
    out: list[tuple] = []
    t = T0
    for dt, total, flow in ((1, 99.0, None), (1, 99.0, None), (216, None, 0.9), (1, None, 0.003),
                            (1, None, 0.003), (600, None, 0.9), (600, None, 0.9)):
        t += dt
        det.step(t, {"total": total, "flow": flow, "battery": 3.6}, out)
    assert out == []


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 1000), st.floats(0.2, 0.95))
def test_raise_and_clear_alternate_in_a_household_with_incidents(seed: int, leak_frac: float) -> None:
    rows = household(3, 6.5, 22, seed=seed, stop_at=local(2, 8 + 10 * leak_frac))
    out, _ = run(rows)
    assert alternate(out)


def test_a_frozen_register_block_catching_up_confirms_no_leak() -> None:
    # total and flow both stand still for 8 h (flow on a small value), then the total
    # catches up in one step: one health report, and the step confirms no flow
    rows = household(3, 6.5, 22, seed=5)
    start, n = 1440 + 10 * 60, 8 * 60
    for t, r in rows[start:start + n]:
        r["total"], r["flow"] = rows[start][1]["total"], 0.05
    out, _ = run(rows)
    assert raises(out, LEAK) == [] and raises(out, CF) == [] and raises(out, INACT) == []
    assert [e[3][0] for e in out if e[1] == HEALTH] == [1]
