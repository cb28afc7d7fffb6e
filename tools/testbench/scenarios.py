"""Scripted sensor traces the project ships: the demo, the benchmark and the end-to-end
tests play these, so none of them needs a recorded corpus.

Same format as the corpus (gzip JSON Lines: a header, then {"t": s, "r": {...}}).
"""
from __future__ import annotations

import gzip
import json
import math
import random
from typing import Iterator

START = "2026-03-02T08:00:00+08:00"


def _elevator_rows(seconds: int, entrapment_at: int | None, seed: int) -> Iterator[tuple[int, dict | None]]:
    rnd = random.Random(seed)
    rated = 1.75
    floor = 1
    t = 0
    idle = {"mode": 0, "dir": 0, "speed": 0.0, "door": 0, "zone": 1, "occupied": 0, "fault": 0}

    def at(**kw):
        r = dict(idle, floor=floor)
        r.update(kw)
        return r

    while t < seconds:
        if entrapment_at is not None and t >= entrapment_at:
            # stuck between floors with the doors shut: the passenger moves about at first,
            # then waits still and the presence sensor mostly loses them
            stuck = t
            while t < seconds:
                seen = t - stuck < 20 or rnd.random() < 0.1
                yield t, at(zone=0, occupied=1 if seen else 0)
                t += 1
            return
        for _ in range(rnd.randint(3, 8)):          # waiting at a floor
            yield t, at()
            t += 1
        for door in (1,) * 4:                       # doors open, passenger steps in
            yield t, at(door=door, occupied=1)
            t += 1
        target = rnd.choice([f for f in range(-1, 12) if f not in (0, floor)])
        step = 1 if target > floor else -1
        while floor != target and t < seconds:      # travel: two seconds per floor
            for _ in range(2):
                yield t, at(dir=step, speed=rated * (0.9 + 0.1 * rnd.random()), zone=0, occupied=1)
                t += 1
            floor += step
            if floor == 0:
                floor += step
        for door in (1,) * 4:                       # arrive, doors open, passenger leaves
            yield t, at(door=door, occupied=1)
            t += 1


class Lift:
    """A car in service a second at a time, for the elevator detector's labelled tests:
    parked spells, passengers who board an empty car and leave it, empty trips to a
    hall call, presence flicker in an empty car; a plan adds incidents (each labelled)
    and sensor artifacts (not incidents). plan: (kind, at_s, duration_s) with kind one of
    trap_landing (the doors fail to open at the end of a ride), trap_between (the car
    stops between floors on a ride), trap_fault (a controller fault as the doors shut
    on a passenger: the car never leaves), trap_still (the same without a fault),
    stop_outside (an empty car stops between floors), and the artifacts stuck (presence
    reads on whatever happens), frozen (the controller repeats one reading taken
    during a trip), out_of_service (mode 3, the car parked) and flicker (a burst of 1-9
    polls of presence in the parked car every few minutes)."""

    INCIDENTS = {"trap_landing": "elevator.entrapment", "trap_between": "elevator.entrapment",
                 "trap_fault": "elevator.entrapment", "trap_still": "elevator.entrapment",
                 "stop_outside": "elevator.stop_outside_zone"}

    def __init__(self, seed: int = 1, rated: float = 1.6, floors: tuple = (-1, 12), plan: tuple = (),
                 busy: float = 0.5) -> None:
        self.rnd = random.Random(seed)
        self.rated, self.lo, self.hi = rated, floors[0], floors[1]
        self.plan = sorted(plan, key=lambda p: p[1])
        self.busy = busy            # the share of idle spells that are short (the car is in demand)
        self.s = {"mode": 0, "dir": 0, "speed": 0.0, "floor": 1, "door": 0, "zone": 1, "occupied": 0, "fault": 0}
        self.rows: list = []
        self.people = 0
        self.incidents: list = []

    def _poll(self, n: int = 1, **kw) -> None:
        self.s.update(kw)
        for _ in range(n):
            r = dict(self.s)
            if self.people:
                r["occupied"] = 0 if self.rnd.random() < 0.03 else 1
            elif self.rnd.random() < 0.002:
                r["occupied"] = 1
            self.rows.append(r)

    def _floor(self, other: int) -> int:
        return self.rnd.choice([f for f in range(self.lo, self.hi + 1) if f not in (0, other)])

    def _trip(self, to: int, stop_zone: int = 1) -> None:
        d = 1 if to > self.s["floor"] else -1
        self._poll(1, dir=d, speed=round(0.5 * self.rated, 2), zone=0, door=0)
        f = self.s["floor"]
        while f != to:
            f += d
            if f == 0:
                f += d
            for i in range(2):
                self._poll(1, speed=round(self.rated * (1 + self.rnd.uniform(-0.01, 0.01)), 2), floor=f,
                           zone=1 if (i == 0 and f != to) else 0)
        self._poll(1, speed=round(0.3 * self.rated, 2), zone=stop_zone)
        self._poll(1, dir=0, speed=0.0, zone=stop_zone)

    def _doors(self, board: bool) -> None:
        """Doors open, whoever rode leaves, maybe someone boards, doors shut."""
        self._poll(self.rnd.randint(1, 2))
        self._poll(self.rnd.randint(2, 4), door=1)
        self.people = 0
        self._poll(self.rnd.randint(2, 4))
        if board:
            self.people = 1
            self._poll(self.rnd.randint(3, 8))
        self._poll(self.rnd.randint(2, 4))
        self._poll(1, door=0)

    def _service(self) -> None:
        if self.rnd.random() < 0.5:                 # an empty trip to the hall call
            self._trip(self._floor(self.s["floor"]))
        self._doors(board=True)
        self._poll(self.rnd.randint(1, 3))
        self._trip(self._floor(self.s["floor"]))
        self._doors(board=False)

    def _incident(self, kind: str, dur: int) -> None:
        if kind == "stop_outside":
            self._poll(self.rnd.randint(60, 300))  # parked, then sent empty to a hall call
            self._trip(self._floor(self.s["floor"]), stop_zone=0)
            start = len(self.rows) - 1
            self._poll(dur, fault=47)
            self._poll(4, fault=0, dir=1, speed=0.15)
            self._poll(1, dir=0, speed=0.0, zone=1)
        else:
            if kind in ("trap_landing", "trap_between"):
                self._doors(board=True)
                self._poll(self.rnd.randint(1, 3))
                self._trip(self._floor(self.s["floor"]), stop_zone=0 if kind == "trap_between" else 1)
                start = len(self.rows) - 1
            else:
                self._doors(board=True)
                start = len(self.rows) - 1
                if kind == "trap_fault":
                    self.s["fault"] = 62
            # the passenger moves about at first, then waits still: the sensor loses them
            still = self.rnd.randint(15, 40)
            for i in range(dur):
                self._poll(1)
                if i == still:
                    self.people = 0
                if i > 60 and self.rnd.random() < 0.01:
                    self.rows[-1]["occupied"] = 1
            self._poll(1, fault=0, zone=1, dir=0, speed=0.0)
            self.people = 1
            self._doors(board=False)
        self.incidents.append({"type": self.INCIDENTS[kind], "start": float(start), "end": float(start + dur)})

    def rows_for(self, seconds: int) -> list:
        todo = [p for p in self.plan if p[0] in self.INCIDENTS]
        while len(self.rows) < seconds:
            if todo and len(self.rows) >= todo[0][1]:
                kind, _, dur = todo.pop(0)
                self._incident(kind, dur)
                continue
            quick = self.rnd.random() < self.busy
            self._poll(self.rnd.randint(5, 40) if quick else self.rnd.randint(60, 900))
            self._service()
        rows = self.rows[:seconds]
        order = ("out_of_service", "flicker", "stuck", "frozen")
        for kind, at, dur in sorted(self.plan, key=lambda p: order.index(p[0]) if p[0] in order else -1):
            end = min(at + dur, len(rows))
            if kind == "out_of_service":
                # from a parked spell: nobody aboard, the doors shut a while ago
                while at < end and any(r["door"] or r["dir"] or r["occupied"] for r in rows[at - 30:at + 1]):
                    at += 1
            if kind in ("stuck", "frozen"):
                # from a poll on a trip: a sensor that sticks on as someone boards an empty
                # car is a boarding to anyone watching it
                while at < end and not rows[at]["speed"]:
                    at += 1
            if kind == "stuck":
                for r in rows[at:end]:
                    r["occupied"] = 1
            elif kind == "out_of_service":
                for r in rows[at:end]:
                    r.update(mode=3, dir=0, speed=0.0, door=0, zone=1, floor=rows[at]["floor"], occupied=0)
            elif kind == "frozen":
                for i in range(at, end):
                    rows[i] = dict(rows[at])
            elif kind == "flicker":
                i = at
                while i < end:
                    n = self.rnd.randint(1, 9)
                    if all(not r["door"] and not r["dir"] and not r["occupied"] for r in rows[i - 40:i + n]):
                        for r in rows[i:i + n]:
                            r["occupied"] = 1
                    i += self.rnd.randint(60, 400)
        return rows

    def labels(self, name: str) -> dict:
        health = [{"kind": k, "start": float(a), "end": float(a + d)} for k, a, d in self.plan
                  if k in ("stuck", "frozen")]
        return {"trace": name, "incidents": list(self.incidents), "episodes": health}


H = 3600
# three cars, three hours each: a presence sensor stuck on for hours (with entrapments
# only what keeps a rider in can show), a controller that freezes and flicker, and a
# car taken out of service with the sensor stuck
LIFTS = {
    "lift-001": dict(seed=21, plan=(("stuck", 1000, 2 * H), ("trap_landing", 3000, 600),
                                    ("trap_between", 6000, 900), ("stop_outside", 9000, 900))),
    "lift-002": dict(seed=22, plan=(("flicker", 0, 3 * H), ("frozen", 1200, 1500), ("trap_still", 5000, 600),
                                    ("stuck", 7000, 3 * H), ("trap_fault", 8500, 900))),
    "lift-003": dict(seed=23, busy=0.2, plan=(("stuck", 600, 3 * H), ("out_of_service", 3000, 2 * H))),
}


def lift(name: str, seconds: int = 3 * H, seed: int = 1, plan: tuple = (), **kw) -> tuple[dict, list, dict]:
    """A labelled synthetic elevator trace (LIFTS by name, or the plan given): header,
    rows [(t, reading)] and labels."""
    if name in LIFTS:
        kw = dict(LIFTS[name], **kw)
        seed, plan = kw.pop("seed"), kw.pop("plan")
    car = Lift(seed=seed, plan=plan, **kw)
    rows = car.rows_for(seconds)
    header = {"trace": name, "profile": "elevator", "period_s": 1, "start": START,
              "config": {"rated_speed": car.rated, "floors": [car.lo, car.hi]}}
    return header, list(enumerate(rows)), car.labels(name)


def write_lift_corpus(folder: str) -> list[str]:
    """tests/corpus-synth/elevator, in the corpus layout (score.py reads it)."""
    import os
    os.makedirs(folder, exist_ok=True)
    out = []
    for name in LIFTS:
        header, rows, labels = lift(name)
        out.append(write(os.path.join(folder, name + ".jsonl.gz"), header, rows))
        with open(os.path.join(folder, name + ".labels.json"), "w") as fh:
            json.dump(labels, fh, indent=1)
    return out


def _water_rows(seconds: int, flow_from: int | None, seed: int) -> Iterator[tuple[int, dict | None]]:
    rnd = random.Random(seed)
    total = 147.969
    t = 0
    while t < seconds:
        if flow_from is not None and t >= flow_from:
            flow = 0.9                               # a tap left open
        else:
            flow = rnd.choice((0.0, 0.0, 0.0, 0.0, 0.35, 0.6))
        total += flow / 60.0
        yield t, {"total": round(total, 3), "flow": flow, "battery": 3.56}
        t += 60


def elevator(seconds: int = 3600, entrapment_at: int | None = 40, seed: int = 1):
    header = {"trace": "demo-elevator", "profile": "elevator", "period_s": 1, "start": START,
              "config": {"rated_speed": 1.75, "floors": [-1, 11]}}
    return header, _elevator_rows(seconds, entrapment_at, seed)


def elevator_ebikes(floors: tuple = (3, 7), seed: int = 5) -> tuple[dict, list, list]:
    """A car that stops at each of floors where someone pushes an e-bike in: the camera's
    detection (field ebike, map elevator-ebike) flickers while the doors are held open,
    drops out for a few polls, comes back, and the bike is taken out before the doors
    shut; then the car leaves. Header, rows [(t, reading)], and per stop (floor, first
    poll seen, last poll seen)."""
    rnd = random.Random(seed)
    rated = 1.6
    s = {"mode": 0, "dir": 0, "speed": 0.0, "floor": 1, "door": 0, "zone": 1, "occupied": 0, "fault": 0, "ebike": 0}
    rows: list = []
    stops = []

    def poll(n: int = 1, **kw) -> None:
        s.update(kw)
        for _ in range(n):
            rows.append((len(rows), dict(s)))

    def trip(to: int) -> None:
        d = 1 if to > s["floor"] else -1
        poll(1, dir=d, speed=0.8, zone=0, door=0)
        f = s["floor"]
        while f != to:
            f += d
            poll(2, speed=rated, floor=f, zone=0)
        poll(1, speed=0.3)
        poll(1, dir=0, speed=0.0, zone=1)

    poll(20)
    for f in floors:
        trip(f)
        poll(3, door=1, occupied=1)
        seen = []
        flicker = [1, 1] + [1 if rnd.random() < 0.6 else 0 for _ in range(12)] + [0] * 6 + [1, 0, 1, 1]
        for b in flicker:                            # the camera holds the doors open
            if b:
                seen.append(len(rows))
            poll(1, ebike=b)
        poll(5, ebike=0)                             # the bike is out
        poll(3, door=0, occupied=0)
        stops.append((f, seen[0], seen[-1]))
        poll(5)
    trip(1)
    poll(40)
    header = {"trace": "demo-elevator-ebikes", "profile": "elevator", "period_s": 1, "start": START,
              "config": {"rated_speed": rated, "floors": [-1, 11]}}
    return header, rows, stops


def water_meter(seconds: int = 6 * 3600, flow_from: int | None = 600, seed: int = 2):
    header = {"trace": "demo-water", "profile": "water_meter", "period_s": 60, "start": START,
              "config": {"resolution": 0.001, "occupants": 1}}
    return header, _water_rows(seconds, flow_from, seed)


def _noise_rows(seconds: int, work_from: int | None, seed: int) -> Iterator[tuple[int, dict | None]]:
    rnd = random.Random(seed)
    for t in range(0, seconds, 10):
        v = 44 + 8 * math.sin(2 * math.pi * (t % 86400) / 86400 - 1.9) + rnd.gauss(0, 1.5)
        if rnd.random() < 0.02:
            v = rnd.uniform(60, 78)                  # a car, a horn, a door
        if work_from is not None and work_from <= t < work_from + 3 * 3600:
            v = rnd.uniform(63, 84)                  # machines and hammering on site
        yield t, {"laeq": round(v, 1)}


def _structure_rows(seconds: int, vib_from: int | None, seed: int) -> Iterator[tuple[int, dict | None]]:
    rnd = random.Random(seed)
    for t in range(0, seconds, 600):
        sun = math.sin(2 * math.pi * (t % 86400) / 86400 - 1.2)     # the building breathes
        vib = abs(rnd.gauss(0.3, 0.3))
        if vib_from is not None and vib_from <= t < vib_from + 6 * 3600 and rnd.random() < 0.85:
            vib = rnd.uniform(5.5, 15)               # pile driving next door
        yield t, {"tilt_x": round(0.21 + 0.005 * sun + rnd.gauss(0, 0.0004), 4),
                  "tilt_y": round(-0.14 + 0.004 * sun + rnd.gauss(0, 0.0004), 4),
                  "crack": round(1.3 + 0.03 * sun + rnd.gauss(0, 0.003), 3),
                  "settle": round(-1.2 + 0.12 * sun + rnd.gauss(0, 0.02), 2), "vib": round(vib, 2)}


def noise(seconds: int = 2 * 86400, work_from: int | None = 86400 - 2 * 3600, seed: int = 3):
    """A construction site's boundary meter; by default the crew works at night from 22:00."""
    header = {"trace": "demo-noise", "profile": "noise", "period_s": 10, "start": "2026-03-02T00:00:00+08:00",
              "config": {"night": ["22:00", "06:00"], "night_limit_dba": 55}}
    return header, _noise_rows(seconds, work_from, seed)


def structure(seconds: int = 14 * 86400, vib_from: int | None = 10 * 86400 + 9 * 3600, seed: int = 4):
    """A protected building next to a site; by default piles are driven on day 10."""
    header = {"trace": "demo-structure", "profile": "structure", "period_s": 600,
              "start": "2026-03-02T00:00:00+08:00",
              "config": {"vib_limit_mm_s": 5.0, "tilt_limit_deg": 0.05, "settle_limit_mm": 3.0}}
    return header, _structure_rows(seconds, vib_from, seed)


def write(path: str, header: dict, rows) -> str:
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(header) + "\n")
        for t, r in rows:
            fh.write(json.dumps({"t": t, "r": r}) + "\n")
    return path


def excerpt(src: str, dest: str, t_from: float, t_to: float) -> str:
    """Cut [t_from, t_to] out of a trace, re-based so it starts at t = 0 (the header's
    start moves forward by t_from): an incident from a day-long trace in a minute."""
    from datetime import datetime, timedelta
    with gzip.open(src, "rt") as fh:
        header = json.loads(fh.readline())
        start = datetime.fromisoformat(header["start"]) + timedelta(seconds=t_from)
        header = dict(header, start=start.isoformat(), trace=header["trace"] + "-excerpt")
        with gzip.open(dest, "wt") as out:
            out.write(json.dumps(header) + "\n")
            for line in fh:
                row = json.loads(line)
                if t_from <= row["t"] <= t_to:
                    out.write(json.dumps({"t": row["t"] - t_from, "r": row["r"]}) + "\n")
    return dest


# ---------------------------------------------------------------- water quality
# A river station a minute at a time, with what its probes do besides measuring the
# river: calibration visits, a probe out of the water, bubbles, an analyser's flushes,
# drift, a frozen register, a stuck sensor, silence; and real pollution. Labelled as the
# corpus is (incidents), plus the artifact episodes for the tests. The dev corpus has
# water-quality traces from one generator; these are a second opinion with other rates,
# shapes and noise (tests/corpus-synth/water_quality, tests/test_detect_water_quality.py).

def wq_limits() -> dict:
    from edge.detect.water_quality import CLASSES, KEYS, LIMITS
    return {c: dict(zip(KEYS, LIMITS[c])) for c in CLASSES}


def _do_saturation(temp: float) -> float:
    """mg/L of oxygen in fresh water at 1 atm (Benson-Krause fit, good to ~0.05)."""
    return 14.652 - 0.41022 * temp + 0.007991 * temp ** 2 - 0.000077774 * temp ** 3


def _shape(t: float, start: float, ramp: float, hold: float, fall: float) -> float:
    """0 .. 1 .. 0: a smooth rise over ramp s, hold s at the top, a fall over fall s."""
    x = t - start
    if x <= 0 or x >= ramp + hold + fall:
        return 0.0
    if x < ramp:
        u = x / ramp
    elif x < ramp + hold:
        return 1.0
    else:
        u = 1 - (x - ramp - hold) / fall
    return u * u * (3 - 2 * u)


class Station:
    """plan: (kind, start s, duration s, options) entries. Kinds: sewage (NH3-N and TP
    up, DO down), acid, alkali, anoxia (pollution, labelled); calibration, dry, frozen,
    stuck, silence (episodes); and for the whole trace: bubbles (a day), flush (period s),
    ph_drift / nh3n_drift (a day), tp_cycle (the analyser's s between results)."""

    def __init__(self, cls: str = "III", seed: int = 1, ph0: float = 7.4, do_frac: float = 0.9,
                 nh3n0: float = 0.35, tp0: float = 0.08, turb0: float = 12.0, temp0: float = 20.0,
                 plan: tuple = (), bubbles: float = 4, flush: float = 0, ph_drift: float = 0,
                 nh3n_drift: float = 0, tp_cycle: int = 60) -> None:
        self.cls, self.rnd = cls, random.Random(seed)
        self.lim = wq_limits()[cls]
        self.base = {"ph": ph0, "do_frac": do_frac, "nh3n": nh3n0, "tp": tp0, "turb": turb0, "temp": temp0}
        self.plan = sorted(plan, key=lambda e: e[1])
        self.bubbles, self.flush, self.tp_cycle = bubbles, flush, tp_cycle
        self.drift = {"ph": ph_drift, "nh3n": nh3n_drift}
        self.held: dict = {}
        self.tp_last = None
        self.phase = self.rnd.uniform(0, 2 * math.pi)

    def river(self, t: float) -> dict:
        """The river itself, noise-free, pollution included."""
        b = self.base
        hod = ((t + 8 * 3600) % 86400) / 3600
        diur = math.sin(2 * math.pi * (hod - 9) / 24)
        temp = b["temp"] + 1.2 * diur + 0.8 * math.sin(t / 86400 * 2 * math.pi / 5 + self.phase)
        w = {"ph": b["ph"] + 0.12 * diur, "do": _do_saturation(temp) * b["do_frac"] + 0.5 * diur,
             "nh3n": b["nh3n"] * (1 + 0.15 * math.sin(t / 86400 * 2 * math.pi / 3 + self.phase)),
             "tp": b["tp"], "temp": temp, "turb": b["turb"] * (1 + 0.3 * math.sin(t / 40000 + self.phase))}
        for kind, start, dur, opt in self.plan:
            ramp = opt.get("ramp", 2400)
            s = _shape(t, start, ramp, dur - ramp - opt.get("fall", 3600), opt.get("fall", 3600))
            if not s:
                continue
            if kind == "sewage":
                w["nh3n"] += s * (opt["nh3n"] - b["nh3n"])
                w["tp"] += s * (opt["tp"] - b["tp"])
                w["do"] -= s * opt.get("do_drop", 2.5)
                w["turb"] += s * 15
            elif kind in ("acid", "alkali"):
                w["ph"] += s * (opt["ph"] - b["ph"])
            elif kind == "anoxia":
                w["do"] = w["do"] * (1 - s) + s * opt["do"]
        return w

    def polluted(self, w: dict) -> bool:
        lim = self.lim
        return (w["ph"] < lim["ph_min"] or w["ph"] > lim["ph_max"] or w["do"] < lim["do_min"]
                or w["nh3n"] > lim["nh3n_max"] or w["tp"] > lim["tp_max"])

    def reading(self, t: float, w: dict) -> dict | None:
        """What the probes say about the river at t."""
        rnd = self.rnd
        days = t / 86400
        ph = w["ph"] + self.drift["ph"] * days + rnd.gauss(0, 0.015)
        nh3n = (w["nh3n"] + self.drift["nh3n"] * days) * (1 + rnd.gauss(0, 0.04))
        if self.tp_last is None or t % self.tp_cycle < 60:
            self.tp_last = w["tp"] * (1 + rnd.gauss(0, 0.05))
        r = {"ph": ph, "do": w["do"] + rnd.gauss(0, 0.05), "nh3n": nh3n, "tp": self.tp_last,
             "temp": w["temp"] + rnd.gauss(0, 0.02), "turb": w["turb"] * (1 + rnd.gauss(0, 0.05))}
        if self.flush and t % self.flush < 300:
            # the analyser rinses, then measures its check standard: TP reads 0, then high
            r["tp"] = 0.0 if t % self.flush < 120 else 4 * self.lim["tp_max"]
        if rnd.random() < self.bubbles / 1440:
            f = rnd.choice(("do", "nh3n", "turb", "ph"))
            r[f] = {"do": r["do"] + rnd.choice((-1, 1)) * rnd.uniform(2, 4), "nh3n": r["nh3n"] * rnd.uniform(4, 10),
                    "turb": r["turb"] * 5, "ph": r["ph"] + rnd.choice((-1, 1)) * rnd.uniform(0.3, 0.8)}[f]
        for kind, start, dur, opt in self.plan:
            if start <= t < start + dur:
                r = self._artifact(kind, t - start, dur, opt, r, w)
        if r is None:
            return None
        for k, d in (("ph", 2), ("do", 2), ("nh3n", 3), ("tp", 3), ("temp", 2), ("turb", 1)):
            if r.get(k) is not None:
                r[k] = round(max(r[k], 0.0), d)
        return r

    def _artifact(self, kind: str, x: float, dur: float, opt: dict, r: dict, w: dict) -> dict | None:
        rnd = self.rnd
        if kind == "silence":
            return None
        if kind == "calibration":
            # buffers a few minutes each with a rinse between, then the DO zero solution
            seq = opt.get("buffers", (6.86, 4.00, 9.18))
            seg = (dur - 600) / len(seq)
            if x < dur - 600:
                i = int(x // seg)
                if x - i * seg < 60:
                    r["ph"] = rnd.uniform(6.5, 8.0)                     # rinse
                else:
                    r["ph"] = seq[i] + 0.05 * math.exp(-(x - i * seg - 60) / 60) + rnd.gauss(0, 0.005)
            elif x < dur - 120:
                r["do"] = abs(rnd.gauss(0.08, 0.06))
            return r
        if kind == "dry":
            # in the air: turbidity ~0, no TP sample, DO at air saturation, temperature
            # towards the air's, pH electrode drying out, NH3-N electrode nonsense
            r["turb"] = rnd.uniform(0, 0.3)
            r["tp"] = None
            r["temp"] = w["temp"] + min(x / 1200, 1) * opt.get("air", 5)
            r["do"] = _do_saturation(r["temp"]) + rnd.gauss(0, 0.05)
            r["ph"] = w["ph"] - 0.012 * x / 60 + rnd.gauss(0, 0.02)
            r["nh3n"] = r["nh3n"] * math.exp(rnd.gauss(1, 1))
            return r
        if kind == "frozen":
            if "frozen" not in self.held or x < 60:
                self.held["frozen"] = dict(r)
            return dict(self.held["frozen"])
        if kind == "stuck" and r is not None:
            r[opt.get("field", "do")] = opt.get("value", 0.0)
            return r
        return r

    def rows(self, days: float) -> Iterator[tuple[int, dict | None]]:
        for i in range(int(days * 1440)):
            t = i * 60
            yield t, self.reading(t, self.river(t))

    def labels(self, name: str, days: float) -> dict:
        incidents = []
        for kind, start, dur, opt in self.plan:
            if kind in ("sewage", "acid", "alkali", "anoxia"):
                bad = [t for t in range(int(start), int(start + dur) + 60, 60) if self.polluted(self.river(t))]
                if bad:
                    incidents.append({"type": "wq.pollution", "start": float(bad[0]), "end": float(bad[-1])})
            elif kind == "silence" and dur >= 300:
                incidents.append({"type": "device.comm_loss", "start": float(start),
                                  "end": float(start + dur - start % 60)})
        episodes = [{"kind": k, "start": float(s), "end": float(s + d)} for k, s, d, _ in self.plan
                    if k in ("calibration", "dry", "frozen", "stuck")]
        return {"trace": name, "incidents": sorted(incidents, key=lambda i: i["start"]), "episodes": episodes}


D = 86400
H = 3600
# four stations, four days each: every artifact the detector must ride through, and
# pollution of each kind, in other proportions than the dev corpus
WQ_STATIONS = {
    "wqs-001": dict(cls="III", seed=11, bubbles=8, flush=6 * H, plan=(
        ("calibration", 0 * D + 10 * H, 1800, {}),
        ("sewage", 1 * D + 10 * H, 5 * H, {"nh3n": 2.2, "tp": 0.45, "ramp": 2400}),
        ("dry", 2 * D + 14 * H, 2 * H, {}),
        ("acid", 3 * D + 3 * H, 4 * H, {"ph": 5.3, "ramp": 3000}))),
    "wqs-002": dict(cls="II", seed=12, ph0=7.0, nh3n0=0.3, ph_drift=-0.3, nh3n_drift=0.08, bubbles=3, plan=(
        ("alkali", 1 * D + 13 * H, 4 * H, {"ph": 9.6, "ramp": 1800}),
        ("calibration", 3 * D + 11 * H, 2400, {"buffers": (7.00, 4.00, 10.01)}),
        ("silence", 2 * D + 2 * H, 2400, {}))),
    "wqs-003": dict(cls="IV", seed=13, nh3n0=0.5, tp0=0.12, tp_cycle=1800, bubbles=5, plan=(
        ("frozen", 0 * D + 20 * H, 6 * H, {}),
        ("stuck", 1 * D + 15 * H, 8 * H, {"field": "do", "value": 0.0}),
        ("sewage", 3 * D + 4 * H, 7 * H, {"nh3n": 2.6, "tp": 0.5, "ramp": 5400, "do_drop": 1.0}))),
    "wqs-004": dict(cls="III", seed=14, do_frac=0.75, bubbles=20, flush=4 * H, temp0=26.0, plan=(
        ("anoxia", 1 * D + 1 * H, 5 * H, {"do": 2.0, "ramp": 3600}),
        ("dry", 0 * D + 15 * H, 50 * 60, {}),
        ("dry", 2 * D + 9 * H, 3 * H, {"air": 8}),
        ("calibration", 2 * D + 16 * H, 1500, {"buffers": (6.86, 4.00)}),
        ("calibration", 3 * D + 9 * H, 2100, {}),
        ("silence", 3 * D + 20 * H, 1200, {}))),
}


def water_quality(name: str = "wqs-001", days: float = 4) -> tuple[dict, Iterator, dict]:
    """One synthetic station of WQ_STATIONS: header, rows and labels."""
    st = Station(**WQ_STATIONS[name])
    header = {"trace": name, "profile": "water_quality", "period_s": 60, "start": "2026-05-04T00:00:00+08:00",
              "config": {"class": st.cls, "standard": "GB 3838-2002", "limits": wq_limits()}}
    return header, st.rows(days), st.labels(name, days)


def write_wq_corpus(folder: str, days: float = 4) -> list[str]:
    """tests/corpus-synth/water_quality, in the corpus layout (score.py reads it)."""
    import os
    os.makedirs(folder, exist_ok=True)
    out = []
    for name in WQ_STATIONS:
        header, rows, labels = water_quality(name, days)
        out.append(write(os.path.join(folder, name + ".jsonl.gz"), header, rows))
        with open(os.path.join(folder, name + ".labels.json"), "w") as fh:
            json.dump(labels, fh, indent=1)
    return out
