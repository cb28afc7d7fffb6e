# Maintenance as evidence: how long a maintenance session must last to be believed, and
# the check of a maintenance company's claimed record against the sessions a device
# reported (elevator.maintenance, edge/codes.py 0x24). One table, read by the platform's
# check (GET /v1/maintenance/check) and by the gateway's overdue watch
# (gateway/supervision.py). docs/elevator-supervision.md gives the reasons at length.
from __future__ import annotations

from typing import Any, Iterable, NamedTuple

SESSION_TYPE = "elevator.maintenance"    # the device's report; its "clear" carries the whole session


class Kind(NamedTuple):
    name: str
    min_s: int          # the shortest session believed to be this kind of work
    why: str


# TSG T5002-2017 names the four kinds of work and lists their items; it gives no
# durations. These minimums are the project's judgement (docs/elevator-supervision.md):
# low on purpose, since the device only sees the time the car is in inspection mode.
KINDS = (
    Kind("half_monthly", 20 * 60, "cleaning, lubrication, adjustment and checks of the machine room, car,"
         " landing doors and pit (art. 31's every-15-days work): well over 20 minutes on a passenger lift"),
    Kind("quarterly", 30 * 60, "the half-monthly work plus the quarterly items: at least 30 minutes"),
    Kind("half_yearly", 45 * 60, "the quarterly work plus the half-yearly items: at least 45 minutes"),
    Kind("yearly", 60 * 60, "the half-yearly work plus the yearly items (brake, safety gear and"
         " buffer checks among them): at least an hour"),
)
BY_KIND = {k.name: k for k in KINDS}
# a session at least this long counts as maintenance at all (the overdue watch)
GENUINE_S = min(k.min_s for k in KINDS)

CONFIRMED, NO_SESSION, TOO_SHORT = "confirmed", "no_session", "too_short"


def session_of(event: dict[str, Any]) -> dict[str, Any] | None:
    """A finished session from a stored elevator.maintenance event (its "clear": start,
    end, duration_s, door_cycles, floors_served), or None: a session still open, or one
    whose times are seconds since the device's boot (its clock was not set), which
    cannot be placed against a claim."""
    v = event["values"]
    if event["action"] != "clear" or not event["clock_set"] or v.get("start") is None or v.get("end") is None:
        return None
    return {"id": event["id"], "start": v["start"], "end": v["end"],
            "duration_s": v.get("duration_s") if v.get("duration_s") is not None else v["end"] - v["start"],
            "door_cycles": v.get("door_cycles"), "floors_served": v.get("floors_served"),
            "verified": event.get("verified")}


def check_claim(kind: str, start: int, end: int, sessions: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A claimed record (kind, start and end in unix seconds) against the device's
    sessions (session_of's dicts): confirmed (a session overlapping the range, long
    enough for the kind), too_short (sessions overlap it, none long enough) or
    no_session; with the sessions that decided it. Raises KeyError for an unknown kind."""
    need = BY_KIND[kind]
    overlapping = [s for s in sessions if s["start"] <= end and s["end"] >= start]
    # one session must be long enough by itself: short visits do not add up to the work
    enough = [s for s in overlapping if s["duration_s"] >= need.min_s]
    result = CONFIRMED if enough else TOO_SHORT if overlapping else NO_SESSION
    return {"result": result, "kind": kind, "start": start, "end": end, "min_duration_s": need.min_s,
            "why": need.why, "sessions": enough or overlapping}
