"""Scripted sensor traces the project ships: the demo, the benchmark and the end-to-end
tests play these, so none of them needs a recorded corpus.

Same format as the corpus (gzip JSON Lines: a header, then {"t": s, "r": {...}}).
"""
from __future__ import annotations

import gzip
import json
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


def water_meter(seconds: int = 6 * 3600, flow_from: int | None = 600, seed: int = 2):
    header = {"trace": "demo-water", "profile": "water_meter", "period_s": 60, "start": START,
              "config": {"resolution": 0.001, "occupants": 1}}
    return header, _water_rows(seconds, flow_from, seed)


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
