"""edge.detect.elevator: scripted scenarios with their alarms and timing, properties on
glitches and on the alarm lifecycle, and the dev corpus replayed under both runtimes."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from edge.codes import CODES, ACTIONS
from edge.detect.elevator import Detector, PARAMS
from edge.pipeline import Pipeline, merge_params
from edge.state import MemoryStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE = {"rated_speed": 1.6, "floors": [-1, 15], "utc_offset_s": 8 * 3600}
T0 = 1_780_000_000


class Car:
    """A scripted elevator polled once a second: each method appends polls."""

    def __init__(self, floor=1):
        self.t = T0
        self.rows = []
        self.s = dict(mode=0, dir=0, speed=0.0, floor=floor, door=0, zone=1, occupied=0, fault=0)

    def at(self):
        """Seconds since the start of the script: the time of the next poll."""
        return self.t - T0

    def poll(self, n=1, **change):
        self.s.update(change)
        for _ in range(n):
            self.rows.append((self.t, dict(self.s)))
            self.t += 1
        return self

    def fail(self, n):
        """Polls that got no answer."""
        for _ in range(n):
            self.rows.append((self.t, None))
            self.t += 1
        return self

    def skip(self, n):
        """Missing lines: time passes with no poll at all."""
        self.t += n
        return self

    def idle(self, n, occupied=0):
        return self.poll(n, dir=0, speed=0.0, door=0, zone=1, occupied=occupied)

    def trip(self, to, occupied=1, door=0, stop_zone=1):
        """Accelerate, cruise two polls a floor, decelerate, stop (in the zone by default)."""
        d = 1 if to > self.s["floor"] else -1
        rated = SITE["rated_speed"]
        self.poll(1, dir=d, speed=0.9, zone=0, door=door, occupied=occupied)
        f = self.s["floor"]
        while f != to:
            f += d
            if f == 0:
                f += d
            self.poll(1, speed=rated, floor=f, zone=0)
            self.poll(1, speed=rated, zone=1 if f != to else 0)
        self.poll(1, speed=0.5, zone=0)
        return self.poll(1, dir=0, speed=0.0, zone=stop_zone)

    def ride(self, to, dwell=8):
        """A passenger boards, rides to `to` and leaves: a normal service cycle."""
        self.poll(3, door=1, occupied=0).poll(dwell, door=1, occupied=1).poll(3, door=0)
        self.trip(to, occupied=1)
        self.poll(2, door=0).poll(dwell, door=1, occupied=1).poll(4, door=1, occupied=0)
        return self.poll(1, door=0)

    def events(self, site=SITE, overrides=None, rows=None):
        """[(seconds since start, type, action, values)] from the on-device pipeline."""
        pipe = Pipeline("elevator", dict(site), overrides, MemoryStore(), telemetry=False)
        out = []
        for t, r in rows if rows is not None else self.rows:
            for et, code, action, values in pipe.step(t, r):
                out.append((et - T0, CODES[code][0], ACTIONS[action], values))
        return out


def raises(events):
    return [(t, typ) for t, typ, action, _ in events if action == "raise"]


def normal_day():
    car = Car(floor=1)
    car.idle(60).ride(5).idle(90).ride(-1).idle(40).ride(12, dwell=6).idle(120)
    car.ride(1).idle(30, occupied=0)
    return car


# ------------------------------------------------------------------ scenarios

def test_normal_service_raises_nothing():
    assert normal_day().events() == []


def test_entrapment_doors_fail_to_open_and_presence_drops_out():
    car = Car(floor=1)
    car.idle(30).poll(8, door=1, occupied=1).poll(3, door=0)
    car.trip(9, occupied=1)
    stop = car.at() - 1
    car.idle(6, occupied=1).idle(300, occupied=0)        # the trapped person keeps still
    car.poll(80, door=1, occupied=1)                     # rescued: the doors open
    ev = car.events()
    assert raises(ev) == [(stop + 30, "elevator.entrapment")]
    clears = [e for e in ev if e[2] == "clear"]
    assert len(clears) == 1 and clears[0][0] > stop + 306


def test_entrapment_boarded_at_a_floor_car_never_leaves():
    car = Car(floor=3)
    car.idle(50).poll(6, door=1, occupied=1)
    shut = car.at()
    car.poll(12, door=0, occupied=1).poll(400, occupied=0)
    assert raises(car.events()) == [(shut + 30, "elevator.entrapment")]


def test_entrapment_between_floors_is_not_a_stop_outside_zone():
    car = Car(floor=1)
    car.idle(20).poll(8, door=1, occupied=1).poll(2, door=0)
    car.trip(4, occupied=1, stop_zone=0)
    stop = car.at() - 1
    car.poll(600, occupied=0)
    assert raises(car.events()) == [(stop + 30, "elevator.entrapment")]


def test_passenger_waiting_a_few_seconds_before_departure_is_not_trapped():
    car = Car(floor=1)
    car.idle(20).poll(6, door=1, occupied=1).poll(12, door=0, occupied=1)
    car.trip(6).poll(2).poll(8, door=1).poll(1, door=0, occupied=0).idle(200)
    assert car.events() == []


def test_presence_flicker_in_a_parked_car_is_nobody():
    car = Car(floor=2)
    car.idle(40)
    for _ in range(20):
        car.idle(5, occupied=1).idle(25, occupied=0)
    assert car.events() == []


def test_presence_stuck_on_in_a_parked_car_raises_nothing_and_is_reported_once():
    # the last passenger leaves, the sensor stays on (an object, a fault) for hours
    car = Car(floor=1)
    car.idle(30).poll(3, door=1).poll(8, door=1, occupied=1).poll(3, door=0).trip(6, occupied=1)
    car.poll(2).poll(10, door=1).poll(1, door=0)
    car.idle(3 * 3600, occupied=1)
    ev = car.events()
    assert raises(ev) == []
    health = [e for e in ev if e[1] == "device.sensor_health"]
    assert [e[3][:2] for e in health] == [(2, 6)]     # kind 2 stuck sensor, field 6 occupied
    assert health[0][3][2] == PARAMS["occupied_stuck_s"]


def test_presence_stuck_on_while_the_car_serves_trips_raises_nothing():
    car = Car(floor=1)
    car.idle(20)
    for to in (5, 2, 9, -1, 3, 12, 1):
        # doors open, people leave and board, the reading never drops: nobody seen come in
        car.poll(8, door=1, occupied=1).poll(2, door=0, occupied=1).trip(to, occupied=1)
        car.poll(2).poll(8, door=1).poll(1, door=0).idle(45, occupied=1)
    car.idle(600, occupied=1)
    ev = car.events()
    assert raises(ev) == []
    assert [e[3][:2] for e in ev if e[1] == "device.sensor_health"] == [(2, 6)]


def stuck_car():
    """A car whose presence sensor is stuck on, after a few rides."""
    car = Car(floor=1)
    car.idle(20)
    for to in (5, 2):
        car.poll(8, door=1, occupied=1).poll(2, door=0, occupied=1).trip(to, occupied=1)
        car.poll(2).poll(8, door=1).poll(1, door=0).idle(60, occupied=1)
    return car


def test_stuck_sensor_doors_fail_to_open_after_a_ride_is_entrapment():
    car = stuck_car()
    car.poll(8, door=1, occupied=1).poll(2, door=0, occupied=1).trip(9, occupied=1)
    stop = car.at() - 1
    car.idle(400, occupied=1)
    assert raises(car.events()) == [(stop + PARAMS["entrapment_s"], "elevator.entrapment")]


def test_stuck_sensor_stop_between_floors_on_a_ride_is_entrapment():
    car = stuck_car()
    car.poll(8, door=1, occupied=1).poll(2, door=0, occupied=1).trip(7, occupied=1, stop_zone=0)
    stop = car.at() - 1
    car.poll(400)
    assert raises(car.events()) == [(stop + PARAMS["entrapment_s"], "elevator.entrapment")]


def test_stuck_sensor_fault_as_the_doors_shut_is_entrapment():
    car = stuck_car()
    car.poll(8, door=1, occupied=1)
    shut = car.at()
    car.poll(400, door=0, fault=62)
    assert raises(car.events()) == [(shut + PARAMS["entrapment_s"], "elevator.entrapment")]


def test_stuck_sensor_empty_car_sent_from_its_parking_stops_between_floors():
    # it stood shut for minutes: it answers a hall call, nobody rides it
    car = stuck_car()
    car.idle(300, occupied=1).trip(8, occupied=1, stop_zone=0)
    stop = car.at() - 1
    car.poll(300, fault=47)
    assert raises(car.events()) == [(stop + PARAMS["stop_outside_s"], "elevator.stop_outside_zone")]


def test_stuck_sensor_car_taken_out_of_service_raises_nothing():
    car = stuck_car()
    car.poll(8, door=1, occupied=1).poll(2, door=0, mode=3).trip(1, occupied=1)
    car.idle(4 * 3600, occupied=1)
    assert raises(car.events()) == []


def test_sensor_back_from_stuck_sees_the_next_entrapment():
    car = stuck_car()
    car.idle(600, occupied=1).idle(60, occupied=0)           # repaired: reads an empty car
    car.poll(6, door=1, occupied=1)
    shut = car.at()
    car.poll(12, door=0, occupied=1).poll(400, occupied=0)
    assert raises(car.events()) == [(shut + PARAMS["entrapment_s"], "elevator.entrapment")]


def test_presence_burst_after_passengers_left_is_nobody():
    # the car read empty as the doors shut: a burst of 9 s after it is not a boarding
    car = Car(floor=2)
    car.idle(20).ride(7)
    car.idle(4).idle(9, occupied=1).idle(300)
    assert car.events() == []


def test_controller_frozen_mid_trip_is_one_report_and_no_alarm():
    car = Car(floor=1)
    car.idle(20).poll(6, door=1, occupied=1).poll(2, door=0).poll(1, dir=1, speed=0.9, zone=0)
    car.poll(1800, speed=1.6, floor=4, zone=0, occupied=1)       # every register repeats itself
    car.poll(1, dir=0, speed=0.0, floor=9, zone=1, occupied=0).idle(300)
    ev = car.events()
    assert raises(ev) == []
    assert [e[3][:2] for e in ev if e[1] == "device.sensor_health"] == [(1, 255)]


def test_overspeed_raises_on_the_second_sample():
    car = Car(floor=1)
    car.idle(10).poll(1, dir=1, speed=0.9, zone=0).poll(3, speed=1.6, floor=2)
    start = car.at()
    car.poll(3, speed=2.0).poll(20, speed=1.6).trip(10, occupied=0).idle(30)
    ev = car.events()
    assert raises(ev) == [(start + 1, "elevator.overspeed")]
    assert [e[3] for e in ev if e[2] == "raise"] == [(2.0, 1.6)]


@pytest.mark.parametrize("glitch", [655.35, 2.3, 1.9])
def test_one_sample_speed_glitch_never_raises(glitch):
    car = Car(floor=1)
    car.idle(10).poll(1, dir=1, speed=0.9, zone=0).poll(3, speed=1.6)
    car.poll(1, speed=glitch).poll(6, speed=1.6).trip(8, occupied=0).idle(20)
    assert car.events() == []


def test_two_glitch_samples_at_0xffff_are_unknown_not_overspeed():
    car = Car(floor=1)
    car.idle(10).poll(1, dir=1, speed=0.9, zone=0).poll(3, speed=1.6)
    car.poll(2, speed=655.35).poll(6, speed=1.6).trip(8, occupied=0).idle(20)
    assert car.events() == []


def test_overspeed_is_raised_during_maintenance_too():
    car = Car(floor=1)
    car.idle(10).poll(30, mode=1).poll(1, dir=1, speed=0.4, zone=0).poll(3, speed=1.9)
    assert "elevator.overspeed" in [typ for _, typ in raises(car.events())]


def test_door_open_while_moving_raises_on_the_second_sample():
    car = Car(floor=1)
    car.idle(10).poll(5, door=1).poll(2, door=0).poll(1, dir=1, speed=0.9, zone=0)
    start = car.at()
    car.poll(3, speed=1.6, door=1).poll(4, door=0).trip(7, occupied=0).idle(30)
    assert raises(car.events()) == [(start + 1, "elevator.door_open_moving")]


def test_door_contact_bounce_while_moving_never_raises():
    car = Car(floor=1)
    car.idle(10).poll(1, dir=1, speed=0.9, zone=0).poll(3, speed=1.6)
    car.poll(1, door=1).poll(3, door=0).poll(1, door=1).poll(3, door=0).trip(9, occupied=0).idle(20)
    assert car.events() == []


def test_door_opening_in_the_zone_while_levelling_is_normal():
    car = Car(floor=1)
    car.idle(10).poll(1, dir=1, speed=0.9, zone=0).poll(4, speed=1.6)
    # pre-opening: doors start to open in the zone while the car creeps in
    car.poll(1, speed=0.3, zone=1, door=1).poll(2, speed=0.07).poll(1, speed=0.0, dir=0)
    car.poll(1, door=0).poll(1, door=1).poll(8).poll(1, door=0).idle(30)   # and a bounce at the floor
    assert car.events() == []


def test_stop_outside_zone_raises_after_its_time():
    car = Car(floor=1)
    car.idle(20).trip(6, occupied=0, stop_zone=0)
    stop = car.at() - 1
    car.poll(300).poll(5, dir=-1, speed=0.1).poll(60, dir=0, speed=0.0, zone=1)
    ev = car.events()
    assert raises(ev) == [(stop + PARAMS["stop_outside_s"], "elevator.stop_outside_zone")]
    assert [e[2] for e in ev] == ["raise", "clear"]


def test_overshoot_relevelled_within_seconds_is_normal():
    car = Car(floor=1)
    car.idle(20).trip(6, occupied=0, stop_zone=0).poll(9).poll(3, dir=-1, speed=0.08)
    car.poll(1, dir=0, speed=0.0, zone=1).poll(1, zone=0).poll(60, zone=1)   # plus a zone flicker
    assert car.events() == []


def test_comm_gap_in_the_middle_of_a_trip():
    car = Car(floor=1)
    car.idle(20).poll(6, door=1, occupied=1).poll(2, door=0).poll(1, dir=1, speed=0.9, zone=0)
    car.poll(4, speed=1.6).fail(20).poll(3, speed=1.6, floor=9).trip(10)
    car.poll(2).poll(8, door=1).poll(1, door=0, occupied=0).idle(120)
    assert car.events() == []


def test_gap_hiding_arrival_and_door_cycle_forgets_the_passenger():
    car = Car(floor=1)
    car.idle(20).poll(6, door=1, occupied=1).poll(2, door=0).poll(1, dir=1, speed=0.9, zone=0)
    car.poll(4, speed=1.6).skip(40).poll(1, dir=0, speed=0.0, floor=8, zone=1, door=0, occupied=0)
    car.idle(200)
    assert car.events() == []


def test_maintenance_session_with_door_cycles():
    car = Car(floor=2)
    car.idle(30)
    start = car.at()
    car.poll(20, mode=1).poll(10, door=1, occupied=1).poll(5, door=0)           # door cycle 1
    car.poll(1, dir=1, speed=0.4, zone=0).poll(20, door=1)           # 2: inspection run, doors bypassed
    car.poll(120, dir=0, speed=0.0, door=0, floor=4)                # parked outside the zone
    car.poll(1, zone=1).poll(10, door=1).poll(5, door=0).poll(10, door=1).poll(5, door=0)   # 3, 4 at floor 4
    end = car.at() - 1
    car.poll(100, mode=0, occupied=0)
    ev = car.events()
    assert raises(ev) == [(start + PARAMS["maint_on_s"], "elevator.maintenance")]
    clear = [e for e in ev if e[2] == "clear"]
    assert len(clear) == 1 and clear[0][1] == "elevator.maintenance"
    assert clear[0][0] == end + PARAMS["maint_off_s"] + 1
    s, e, dur, cycles, floors = clear[0][3]
    assert (s - T0, e - T0, dur, cycles, floors) == (start, end, end - start, 4, 2)


def test_inspection_glitch_is_not_a_session():
    car = Car(floor=2)
    car.idle(30).poll(3, mode=1).poll(60, mode=0)
    assert car.events() == []


def test_site_without_rated_speed_is_refused():
    with pytest.raises(ValueError, match="rated_speed"):
        Detector({"floors": [1, 10]}, merge_params([PARAMS], None))


def test_params_are_overridable_and_checked():
    car = Car(floor=1)
    car.idle(20).trip(6, occupied=0, stop_zone=0)
    stop = car.at() - 1
    car.poll(200)
    assert raises(car.events(overrides={"stop_outside_s": 90})) == [(stop + 90, "elevator.stop_outside_zone")]
    with pytest.raises(ValueError, match="stop_outside"):
        merge_params([PARAMS], {"stop_outside": 1})


# ------------------------------------------------------------------ e-bikes in the car

FLICKER = (1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1)   # a camera's detections, one a poll


def ebike_stop(car, pattern=FLICKER, after=4):
    """The doors open at the car's floor, someone pushes an e-bike in: the camera's
    detections flicker while the doors stay open; they take it out, the doors shut.
    Returns the polls that read 1 at this stop."""
    car.poll(3, door=1, ebike=0)
    seen = [car.at() + i for i, b in enumerate(pattern) if b]
    for b in pattern:
        car.poll(1, door=1, ebike=b)
    car.poll(after, door=1, ebike=0).poll(3, door=0)
    return seen


def ebikes(events):
    return [(t, values) for t, typ, action, values in events if typ == "elevator.ebike"]


def test_ebike_flickering_at_one_stop_is_one_report_with_floor_and_time_held():
    car = Car(floor=3)
    car.idle(20, occupied=0)
    car.s["ebike"] = 0
    seen = ebike_stop(car)
    car.idle(5)
    leave = car.at()
    car.trip(8, occupied=0)
    car.idle(60)
    ev = car.events()
    # from the vote's second detection to the last, reported when the car is seen moving
    assert ebikes(ev) == [(leave + 1, (3, seen[-1] - seen[1]))], ev
    assert [e for e in ev if e[1] != "elevator.ebike"] == []


def test_a_new_stop_reports_again_and_a_parked_car_reports_once_the_bike_is_gone():
    car = Car(floor=2)
    car.idle(10).poll(1, ebike=0)
    one = ebike_stop(car)
    car.trip(5, occupied=0)
    two = ebike_stop(car, pattern=(1, 0, 1) * 4)       # the same rider, the next landing
    car.idle(120, occupied=0)                           # parked: the vote ends it
    ev = ebikes(car.events())
    # the vote still on from the last stop: the first detection here starts this one
    assert [v for _, v in ev] == [(2, one[-1] - one[1]), (5, two[-1] - two[0])]
    assert ev[1][0] < car.at() - 60                     # not kept until the car leaves


def test_more_detections_at_the_same_stop_after_the_report_are_not_a_second_report():
    car = Car(floor=4)
    car.idle(10).poll(1, ebike=0)
    ebike_stop(car)
    car.idle(60, occupied=0)                   # reported as gone, the car still here
    ebike_stop(car)                            # back again, same stop
    car.idle(60, occupied=0)
    assert [v[0] for _, v in ebikes(car.events())] == [4]


def test_one_false_frame_no_camera_or_a_failing_camera_reports_nothing():
    day = normal_day()
    assert day.events() == []                                       # no camera in the map
    rows = [(t, dict(r, ebike=0)) for t, r in day.rows]
    rows[100][1]["ebike"] = 1                                       # one false frame
    assert ebikes(day.events(rows=rows)) == []
    car = Car(floor=3)
    car.idle(10)
    car.s["ebike"] = None                                           # the camera does not answer
    car.poll(30, door=1).poll(3, door=0).trip(6, occupied=0)
    car.s["ebike"] = 65535                                          # ... or answers nonsense
    car.poll(30, door=1).poll(3, door=0).trip(2, occupied=0).idle(60)
    assert car.events() == []


def test_a_technicians_stop_starts_no_ebike_report():
    car = Car(floor=3)
    car.idle(10).poll(20, mode=1, ebike=0)
    ebike_stop(car)
    car.trip(5, occupied=0)
    car.poll(60, mode=0)
    assert ebikes(car.events()) == []


# ------------------------------------------------------------------ properties

NORMAL = normal_day().rows
GLITCH = {
    "mode": st.sampled_from([None, 0, 2, 3, 7]),   # inspection is a key, not a glitch: see below
    "dir": st.sampled_from([None, -1, 0, 1, 5]),
    "speed": st.one_of(st.none(), st.just(655.35), st.floats(0, 5)),
    "floor": st.one_of(st.none(), st.integers(-5, 300)),
    "door": st.sampled_from([None, 0, 1, 3]),
    "zone": st.sampled_from([None, 0, 1]),
    "occupied": st.sampled_from([None, 0, 1]),
    "fault": st.integers(0, 100),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(NORMAL) - 1), st.sampled_from(sorted(GLITCH) + ["poll"]), st.data())
def test_no_single_sample_glitch_raises_an_alarm(i, field, data):
    rows = list(NORMAL)
    t, r = rows[i]
    if field == "poll":
        rows[i] = (t, None)
    else:
        r = dict(r)
        r[field] = data.draw(GLITCH[field])
        rows[i] = (t, r)
    assert raises(Car().events(rows=rows)) == []


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_one_inspection_poll_never_raises(data):
    i = data.draw(st.integers(0, len(NORMAL) - 1))
    rows = list(NORMAL)
    t, r = rows[i]
    rows[i] = (t, dict(r, mode=1))
    assert raises(Car().events(rows=rows)) == []


reading = st.one_of(st.none(), st.fixed_dictionaries({
    "mode": st.sampled_from([0, 0, 0, 0, 1, None]),
    "dir": st.sampled_from([-1, 0, 0, 1, None]),
    "speed": st.sampled_from([0.0, 0.0, 0.05, 0.5, 1.6, 1.9, 2.5, 655.35, None]),
    "floor": st.sampled_from([1, 2, 3, 255, None]),
    "door": st.sampled_from([0, 0, 1, None]),
    "zone": st.sampled_from([0, 1, 1, None]),
    "occupied": st.sampled_from([0, 1, None]),
    "fault": st.just(0),
}))
# (reading, how many polls it lasts, silence after it)
step = st.tuples(reading, st.integers(1, 50), st.sampled_from([0, 0, 0, 3, 20, 400]))


@settings(max_examples=200, deadline=None)
@given(st.lists(step, max_size=60))
def test_raise_and_clear_alternate_for_every_alarm(steps):
    car = Car()
    for r, n, silence in steps:
        if r is None:
            car.fail(n)
        else:
            car.poll(n, **r)
        car.skip(silence)
    state = {}
    for t, typ, action, _ in car.events():
        if action == "report":
            continue    # device health: a one-off fact, not an alarm
        want = "clear" if state.get(typ) else "raise"
        assert action == want, (t, typ, action)
        state[typ] = action == "raise"


# ------------------------------------------------------------------ synthetic cars

LATENCY = {"elevator.entrapment": 120, "elevator.stop_outside_zone": 180}
HEALTH = {"stuck": 2, "frozen": 1}     # device.sensor_health kinds


def judged(labels, events):
    """Every labelled incident raised once within its latency, no other raise, and one
    device.sensor_health report of the right kind per artifact episode."""
    raised = [(e["t"], e["type"]) for e in events if e["action"] == "raise"]
    for inc in labels["incidents"]:
        got = [t for t, typ in raised if typ == inc["type"] and inc["start"] <= t <= inc["end"]]
        assert len(got) == 1 and got[0] <= inc["start"] + LATENCY[inc["type"]], (inc, raised)
        raised.remove((got[0], inc["type"]))
    assert raised == [], "false alarms"
    health = sorted(e["values"]["kind"] for e in events if e["type"] == "device.sensor_health")
    assert health == sorted(HEALTH[e["kind"]] for e in labels["episodes"]), health


def pipeline_events(header, rows):
    """The replay's events, in its JSON shape, from the pipeline under CPython."""
    pipe = Pipeline("elevator", dict(header["config"], utc_offset_s=8 * 3600), None, MemoryStore(),
                    telemetry=False)
    out = []
    for t, r in rows:
        for et, code, action, values in pipe.step(T0 + t, r):
            names = [f for f, _ in CODES[code][2]]
            out.append({"t": et - T0, "type": CODES[code][0], "action": ACTIONS[action],
                        "values": dict(zip(names, values))})
    return out


SYNTH = os.path.join(REPO, "tests", "corpus-synth", "elevator")


def test_the_synthetic_cars_are_what_the_generator_makes():
    import json
    from tools.testbench import scenarios
    for name in scenarios.LIFTS:
        with open(os.path.join(SYNTH, name + ".labels.json")) as fh:
            assert json.load(fh) == scenarios.lift(name)[2], "regenerate: scenarios.write_lift_corpus"


@pytest.mark.parametrize("rt", ["cpython", "micropython"])
def test_the_synthetic_cars_through_replay(tmp_path, rt):
    import json
    from tools.testbench import scenarios
    from tools.testbench.replay import replay_all
    names = sorted(scenarios.LIFTS)
    replay_all([os.path.join(SYNTH, n + ".jsonl.gz") for n in names], str(tmp_path), rt=rt)
    for name in names:
        with open(os.path.join(SYNTH, name + ".labels.json")) as fh:
            labels = json.load(fh)
        with open(tmp_path / "elevator" / (name + ".events.jsonl")) as fh:
            judged(labels, [json.loads(line) for line in fh])


# what a presence sensor stuck on leaves to see: a ride that does not end at an open
# door, a fault as the doors shut; with a working sensor also a passenger who boards
# and is never taken anywhere
SEEN_STUCK = ["trap_landing", "trap_between", "trap_fault", "stop_outside"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10 ** 6), st.lists(st.sampled_from(SEEN_STUCK + ["trap_still"]), min_size=1, max_size=3),
       st.sampled_from([None, "stuck", "flicker", "frozen", "out_of_service"]))
def test_random_cars_raise_their_incidents_and_nothing_else(seed, kinds, artifact):
    from tools.testbench import scenarios
    # an artifact in the first two hours, then an incident an hour apart
    plan = [(k, 2 * 3600 + 3600 * i, 600) for i, k in enumerate(kinds)]
    if artifact == "stuck":
        plan = [p for p in plan if p[0] in SEEN_STUCK]
        plan.append(("stuck", 600, len(kinds) * 3600 + 2 * 3600))
    elif artifact:
        plan.append((artifact, 600, 3600))
    seconds = 2 * 3600 + 3600 * len(kinds) + 900
    header, rows, labels = scenarios.lift("prop", seconds, seed=seed, plan=tuple(plan))
    judged(labels, pipeline_events(header, rows))


# ------------------------------------------------------------------ both runtimes

TRACES = ["elev-002", "elev-009", "elev-027"]


def test_dev_traces_replay_identically_under_both_runtimes(tmp_path, corpus):
    from tools.testbench.replay import replay_all
    src = os.path.join(corpus, "dev", "elevator")
    paths = [os.path.join(src, n + ".jsonl.gz") for n in TRACES]
    got = {}
    for rt in ("micropython", "cpython"):
        replay_all(paths, str(tmp_path / rt), rt=rt)
        got[rt] = {}
        for n in TRACES:
            with open(tmp_path / rt / "elevator" / (n + ".events.jsonl"), "rb") as f:
                got[rt][n] = f.read()
    assert got["micropython"] == got["cpython"]
    assert all(b'"raise"' in got["cpython"][n] for n in TRACES)
