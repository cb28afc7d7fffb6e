"""edge.habit and the inactivity rule built on it: a day-shift and a night-shift
household each learn their own routine, raise within 12 h of the last use, never in
their normal sleep; the model survives a reboot through a FileStore."""
from __future__ import annotations

import pytest

from edge.codes import RAISE
from edge.habit import Habit, SIZE, UNIT_S
from edge.state import FileStore, MemoryStore
from test_detect_water import INACT, H, detector, household, local, raises, run

DAY_SHIFT = (6.5, 22.0)       # awake 06:30-22:00 local
NIGHT_SHIFT = (15.0, 7.0)     # awake 15:00-07:00, sleeps by day


def test_record_is_small_and_round_trips() -> None:
    h = Habit()
    assert SIZE <= 64
    h.learn(22, 9 * 3600)
    h.add_day()
    h.set_clock(1_780_000_000, 123.456)
    again = Habit(h.to_bytes())
    assert again.to_bytes() == h.to_bytes()
    assert again.usual_s(22, 0) == 9 * 3600 - UNIT_S      # one day of decay
    assert again.clock() == (1_780_000_000, 123.456)


def test_unknown_or_foreign_record_is_ignored() -> None:
    assert Habit(b"\x09" + bytes(SIZE - 1)).days() == 0
    assert Habit(b"short").days() == 0


def test_unseen_hour_has_no_usual_spell() -> None:
    h = Habit()
    h.learn(9, 600)
    assert h.usual_s(3, 1) is None
    assert h.usual_s(9, 1) == 600
    assert h.usual_s(10, 1) is None                     # neighbours only widen a seen hour


@pytest.mark.parametrize("routine", [DAY_SHIFT, NIGHT_SHIFT], ids=["day_shift", "night_shift"])
def test_learns_routine_and_never_raises_in_normal_sleep(routine) -> None:
    out, det = run(household(14, *routine))
    assert raises(out, INACT) == []
    assert det.habit.days() >= 12
    sleep_start = int(routine[1])
    awake_mid = int((routine[0] + 5) % 24)
    # it learned the night's sleep (around the hour it goes to bed), and nothing long mid-shift
    learned = {h: det.habit.usual_s(h, det.inact_spread_h) or 0 for h in range(24)}
    night = max(learned[(sleep_start + d) % 24] for d in (-2, -1, 0, 1, 2))
    assert night >= 5 * 3600 > learned[awake_mid], learned
    # no learned habit brings the alarm below the floor, which the shipped PARAMS put at
    # the cap: other households' dry spells at unusual hours raised false alarms below it
    assert all(det.inact_min_s <= det.threshold(h) <= det.inact_max_s for h in range(24))


@pytest.mark.parametrize("routine", [DAY_SHIFT, NIGHT_SHIFT], ids=["day_shift", "night_shift"])
@pytest.mark.parametrize("fall_after_wake_h", [1.0, 6.0, 14.0])
def test_raises_within_12h_of_last_use(routine, fall_after_wake_h) -> None:
    stop = local(10, routine[0] + fall_after_wake_h)
    rows = household(12, *routine, stop_at=stop)
    out, _ = run(rows)
    r = raises(out, INACT)
    assert len(r) == 1
    last_use = max(t for t, x in rows if x["flow"] > 0 and t < stop + 600)
    assert last_use < r[0] <= last_use + 12 * H
    if fall_after_wake_h == 6.0:                        # mid-day: the learned habit is quicker
        assert r[0] <= last_use + det_floor() + 120


def det_floor() -> int:
    return detector().inact_min_s


def test_before_learning_uses_the_fixed_rule() -> None:
    stop = local(1, 12)
    rows = household(3, *DAY_SHIFT, stop_at=stop)
    out, _ = run(rows)
    r = raises(out, INACT)
    last_use = max(t for t, x in rows if x["flow"] > 0 and t < stop + 600)
    assert len(r) == 1
    assert last_use + detector().inact_max_s <= r[0] <= last_use + 12 * H


def test_unseen_day_out_within_the_floor_does_not_raise() -> None:
    out, _ = run(household(14, *DAY_SHIFT, day_out={11: (9.0, 8.5)}))
    assert raises(out, INACT) == []


def test_model_survives_a_reboot(tmp_path) -> None:
    store = FileStore(str(tmp_path / "state"))
    rows = household(12, *NIGHT_SHIFT, stop_at=local(10, 20.0))
    cut = next(i for i, (t, _) in enumerate(rows) if t >= local(10, 0))
    _, trained = run(rows[:cut], detector(store))
    saved = store.load("water_habit")
    assert saved is not None and len(saved) == SIZE
    # a "reboot": a new detector on the same flash, fed the rest of the trace
    rebooted = detector(FileStore(str(tmp_path / "state")))
    assert rebooted.habit.days() == trained.habit.days()
    for h in range(24):
        assert rebooted.threshold(h) == trained.threshold(h)
    out, _ = run(rows[cut:], rebooted)
    r = raises(out, INACT)
    last_use = max(t for t, x in rows if x["flow"] > 0 and t < local(10, 20.0) + 600)
    assert len(r) == 1 and r[0] <= last_use + det_floor() + 120       # behaves as trained


def test_reboot_during_a_dry_spell_keeps_the_clock(tmp_path) -> None:
    store = FileStore(str(tmp_path / "s"))
    stop = local(8, 12.0)
    rows = household(10, *DAY_SHIFT, stop_at=stop)
    cut = next(i for i, (t, _) in enumerate(rows) if t >= stop + 5 * H)
    _, first = run(rows[:cut], detector(store))
    first._save(rows[cut - 1][0], True)                 # the hourly save before the power cut
    out, _ = run(rows[cut:], detector(FileStore(str(tmp_path / "s"))))
    r = raises(out, INACT)
    assert len(r) == 1 and r[0] <= first.last_use + det_floor() + 120


def test_memory_store_is_enough_for_a_replay() -> None:
    out, det = run(household(2, *DAY_SHIFT), detector(MemoryStore()))
    assert det.store.load("water_habit") is not None
    assert [e for e in out if e[2] == RAISE] == []
