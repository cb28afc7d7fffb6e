"""edge/alarm.py, the alarm lifecycle every detector uses: a condition that holds is news
once (raise), its end is news once (clear), a flicker shorter than hold_s is no news at
all, and the same holds under MicroPython."""
from __future__ import annotations

import json

from hypothesis import given, strategies as st

from edge.alarm import Alarm
from edge.codes import CLEAR, RAISE, code_of
from rig import run_micropython

CODE = code_of("elevator.entrapment")


def drive(alarm: Alarm, steps: list[tuple[int, bool]]) -> list[tuple[int, int]]:
    """(t, action) of every event from a series of (t, condition)."""
    out: list = []
    for t, on in steps:
        alarm.update(t, on, out, (t,))
    return [(t, action) for t, _, action, _ in out]


def test_a_lasting_condition_raises_once_and_clears_once() -> None:
    steps = [(t, 10 <= t < 20) for t in range(30)]
    assert drive(Alarm(CODE), steps) == [(10, RAISE), (20, CLEAR)]


def test_an_event_carries_the_code_the_time_and_the_values_given() -> None:
    out: list = []
    alarm = Alarm(CODE)
    assert alarm.update(5, True, out, (7, 61)) is True
    assert alarm.update(6, True, out, (7, 62)) is False           # no news
    assert alarm.update(9, False, out, (7, 64)) is True
    assert out == [(5, CODE, RAISE, (7, 61)), (9, CODE, CLEAR, (7, 64))]


def test_the_alarm_knows_since_when_it_is_up() -> None:
    alarm = Alarm(CODE)
    drive(alarm, [(3, False), (4, True), (9, True)])
    assert alarm.active and alarm.since == 4
    drive(alarm, [(10, False)])
    assert not alarm.active and alarm.since is None


def test_a_condition_that_comes_back_after_a_clear_raises_again() -> None:
    steps = [(0, True), (1, False), (2, True), (3, False)]
    assert drive(Alarm(CODE), steps) == [(0, RAISE), (1, CLEAR), (2, RAISE), (3, CLEAR)]


def test_a_flicker_inside_the_hold_neither_clears_nor_raises_again() -> None:
    # on at 0; off 10..14 (shorter than the 10 s hold); on again; off for good from 30
    steps = [(t, t < 10 or 15 <= t < 30) for t in range(0, 60)]
    assert drive(Alarm(CODE, hold_s=10), steps) == [(0, RAISE), (40, CLEAR)]


def test_the_hold_counts_from_when_the_condition_went_false_not_from_the_last_poll() -> None:
    # sparse polls: false at 100, still false at 170 -> cleared at 170 with a 60 s hold
    assert drive(Alarm(CODE, hold_s=60), [(0, True), (100, False), (150, False), (170, False)]) == [
        (0, RAISE), (170, CLEAR)]


def test_clear_now_ends_the_alarm_whatever_the_hold_and_only_once() -> None:
    out: list = []
    alarm = Alarm(CODE, hold_s=600)
    alarm.update(0, True, out)
    alarm.update(5, False, out)
    alarm.clear(6, out, (1,))            # e.g. a maintenance session takes over
    alarm.clear(7, out)
    alarm.update(8, False, out)
    assert out == [(0, CODE, RAISE, ()), (6, CODE, CLEAR, (1,))]
    alarm.update(9, True, out)           # a new episode starts afresh
    assert out[-1] == (9, CODE, RAISE, ())


def test_clear_on_an_idle_alarm_says_nothing() -> None:
    out: list = []
    Alarm(CODE).clear(1, out)
    assert out == []


@given(st.lists(st.booleans(), max_size=200), st.integers(0, 20))
def test_raise_and_clear_alternate_starting_with_raise(conditions: list[bool], hold: int) -> None:
    events = drive(Alarm(CODE, hold), list(enumerate(conditions)))
    actions = [a for _, a in events]
    assert actions == [RAISE, CLEAR] * (len(actions) // 2) + [RAISE] * (len(actions) % 2)
    # a raise happens exactly where the condition holds, a clear where it does not
    for t, a in events:
        assert conditions[t] == (a == RAISE)


@given(st.lists(st.booleans(), max_size=200), st.integers(0, 20))
def test_a_clear_comes_only_after_hold_s_of_false(conditions: list[bool], hold: int) -> None:
    for t, action in drive(Alarm(CODE, hold), list(enumerate(conditions))):
        if action == CLEAR:
            assert not any(conditions[max(0, t - hold):t + 1]), (t, hold)


@given(st.lists(st.booleans(), max_size=200))
def test_without_a_hold_events_are_exactly_the_edges(conditions: list[bool]) -> None:
    edges = [(t, RAISE if on else CLEAR) for t, on in enumerate(conditions)
             if on != (conditions[t - 1] if t else False)]
    assert drive(Alarm(CODE), list(enumerate(conditions))) == edges


SCRIPT = """
import json, sys
from edge.alarm import Alarm
steps = json.load(open(sys.argv[1]))
out = []
a = Alarm(%d, hold_s=10)
for t, on in steps:
    a.update(t, on, out, (t,))
    if t == 45:
        a.clear(t, out)
print(json.dumps([[t, c, act, list(v)] for t, c, act, v in out]))
"""


def test_micropython_gives_the_same_events(tmp_path) -> None:
    steps = [(t, t < 10 or 15 <= t < 30 or 42 <= t < 50 or t >= 55) for t in range(70)]
    script = tmp_path / "alarm_run.py"
    script.write_text(SCRIPT % CODE)
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    got = run_micropython(script, str(tmp_path / "steps.json"))
    expected: list = []
    alarm = Alarm(CODE, hold_s=10)
    for t, on in steps:
        alarm.update(t, on, expected, (t,))
        if t == 45:
            alarm.clear(t, expected)
    assert json.loads(got) == [[t, c, a, list(v)] for t, c, a, v in expected]
    assert [a for _, _, a, _ in expected] == [RAISE, CLEAR, RAISE, CLEAR, RAISE]
