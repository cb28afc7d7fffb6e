# Overdue maintenance and inspection, watched at the gateway: an elevator with no genuine
# maintenance session (gateway/maintenance.py's GENUINE_S) for the interval (15 days by
# default: Special Equipment Safety Supervision Regulation art. 31) gets
# elevator.maintenance_overdue, cleared by its next genuine session; one whose yearly
# inspection date (devices.json "inspection_due", YYYY-MM-DD) is past gets
# elevator.inspection_overdue, cleared when a later date is provisioned.
#
# Why here and not on the device: the gateway has wall-clock time and a durable store,
# it outlives the device's reboots and power cuts, a device that is switched off cannot
# raise anything, and the board's heap is full (docs/elevator-supervision.md).
#
# State survives restarts: table supervision, in the store's SQLite file, holds per
# elevator the end of its latest genuine session (read from the stored
# elevator.maintenance reports, kept here after retention deletes them) and the episode
# raised and not yet cleared. The events go through Store.commit, so the uplink sends
# them like any other; their ids come from the episode (gateway/own_events.py), so one
# made again after a crash is a duplicate, not a second alarm.
from __future__ import annotations

import asyncio
import datetime
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from gateway import own_events
from gateway.maintenance import GENUINE_S, SESSION_TYPE
from gateway.metrics import Metrics
from gateway.registry import Device
from gateway.sqlite import DbThread, transaction
from gateway.store import CommitResult, EventRow, Store

log = logging.getLogger(__name__)

INTERVAL_DAYS = 15.0                  # art. 31: maintenance at least every 15 days
CHECK_EVERY_S = 60.0
PROFILE = "elevator"
INSPECTION_KEY = "inspection_due"     # the devices.json field
MAINTENANCE = "elevator.maintenance_overdue"
INSPECTION = "elevator.inspection_overdue"

SCHEMA = """
CREATE TABLE IF NOT EXISTS supervision (
    device TEXT PRIMARY KEY,
    watched_since INTEGER NOT NULL,  -- first checked: the interval runs from here until a session is seen
    last_session INTEGER,            -- the end of its latest genuine maintenance session (unix s)
    maintenance_due INTEGER,         -- the due time of the maintenance_overdue raised and not cleared
    inspection_due INTEGER           -- likewise for inspection_overdue
);
-- how far the stored reports have been read (received_at): one row
CREATE TABLE IF NOT EXISTS supervision_scan (one INTEGER PRIMARY KEY CHECK (one = 0), received_to REAL NOT NULL);
"""


def inspection_due(device: Device) -> int | None:
    """The unix time from which the device's inspection is overdue: the start of the day
    after its provisioned inspection_due date, local time (the due day itself is still
    in time). None when none is provisioned. Raises ValueError for a bad date."""
    raw = device.extra.get(INSPECTION_KEY)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError("%s: %r is not a date YYYY-MM-DD" % (INSPECTION_KEY, raw))
    day = datetime.date.fromisoformat(raw) + datetime.timedelta(days=1)
    return int(time.mktime(day.timetuple()))


@dataclass
class Checked:
    """What one check made."""
    events: list[EventRow]
    result: CommitResult | None


class Supervisor:
    def __init__(self, store: Store, db: DbThread, metrics: Metrics, devices: Callable[[], Sequence[Device]],
                 interval_days: float = INTERVAL_DAYS,
                 on_commit: Callable[[CommitResult], None] | None = None) -> None:
        self.store = store
        self.db = db
        self.metrics = metrics
        self.devices = devices
        self.interval_s = int(interval_days * 86400)
        self.on_commit = on_commit
        self._told: set[tuple[str, str]] = set()     # bad inspection dates logged, once each

    def create_tables(self) -> None:
        """On the DB thread, before the first check."""
        self.store.conn.executescript(SCHEMA)

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except sqlite3.OperationalError as e:     # a full or failing disk: the next check tries again
                self.metrics.inc("supervision.store_errors")
                log.error("overdue check failed, again in %.0f s: %s", CHECK_EVERY_S, e)
            await asyncio.sleep(CHECK_EVERY_S)

    async def check(self, now: float | None = None) -> Checked:
        """Read new sessions, then raise or clear what is due; now: for tests (unix s)."""
        now = int(time.time() if now is None else now)
        watched = []
        for d in self.devices():
            if d.profile != PROFILE:
                continue
            try:
                watched.append((d.device_id, inspection_due(d)))
            except ValueError as e:
                self.metrics.inc("supervision.bad_inspection_due")
                if (d.device_id, str(e)) not in self._told:
                    self._told.add((d.device_id, str(e)))
                    log.error("device %s in devices.json: %s; its inspection is not watched", d.device_id, e)
                watched.append((d.device_id, None))
        checked = await self.db.call(self._check, watched, now)
        for e in checked.events:
            self.metrics.inc("supervision.%s.%s" % (e.type.split(".")[1], e.action))
            log.warning("%s %s %s: %s", e.device, e.type, e.action, e.values)
        if checked.result is not None and self.on_commit is not None:
            self.on_commit(checked.result)
        return checked

    # ---- on the DB thread

    def _check(self, watched: list[tuple[str, int | None]], now: int) -> Checked:
        c = self.store.conn
        self._read_sessions()
        state = {r[0]: r[1:] for r in c.execute(
            "SELECT device, watched_since, last_session, maintenance_due, inspection_due FROM supervision")}
        events: list[EventRow] = []
        rows = []
        for device, inspection in watched:
            since, last, m_raised, i_raised = state.get(device, (now, None, None, None))
            due = (last if last is not None else since) + self.interval_s
            m_now = due if now >= due else None
            values = {"last_session": last, "due": due, "interval_d": round(self.interval_s / 86400)}
            events += self._episode(device, MAINTENANCE, m_raised, m_now, now, values)
            i_now = inspection if inspection is not None and now >= inspection else None
            events += self._episode(device, INSPECTION, i_raised, i_now, now, {"due": inspection})
            rows.append((device, since, last, m_now, i_now))
        # the events first: a crash before the state is written makes them again, with
        # the same ids (duplicates); the other order could lose one
        result = self.store.commit(events) if events else None
        with transaction(c) as t:
            t.executemany("INSERT INTO supervision (device, watched_since, last_session, maintenance_due,"
                          " inspection_due) VALUES (?,?,?,?,?) ON CONFLICT (device) DO UPDATE SET"
                          " maintenance_due = excluded.maintenance_due, inspection_due = excluded.inspection_due",
                          rows)
        return Checked(events, result)

    @staticmethod
    def _episode(device: str, name: str, raised: int | None, due_now: int | None, now: int,
                 values: dict[str, Any]) -> list[EventRow]:
        """Clear the episode raised (due `raised`) when it is over, raise the one due now."""
        if raised == due_now:
            return []
        out = []
        if raised is not None:
            out.append(own_events.make(device, name, "clear", raised, now, dict(values, due=raised)))
        if due_now is not None:
            out.append(own_events.make(device, name, "raise", due_now, now, values))
        return out

    def _read_sessions(self) -> None:
        """Fold the genuine sessions stored since the last read into last_session. Reads
        from the last read's received_at on (>=: rows of one commit share it; a row read
        twice changes nothing, max() is idempotent)."""
        c = self.store.conn
        row = c.execute("SELECT received_to FROM supervision_scan").fetchone()
        since = row[0] if row else 0.0
        newest = since
        ends: dict[str, int] = {}
        for received_at, e in self.store.notable(since=since, kind="report"):
            newest = max(newest, received_at)
            if e.type != SESSION_TYPE or e.action != "clear" or (e.values.get("duration_s") or 0) < GENUINE_S:
                continue
            # a device without a set clock reports seconds since its boot: the arrival stands in
            end = int(e.values["end"]) if e.clock_set and e.values.get("end") is not None else int(received_at)
            ends[e.device] = max(end, ends.get(e.device, end))
        with transaction(c) as t:
            t.executemany("INSERT INTO supervision (device, watched_since, last_session) VALUES (?,?,?)"
                          " ON CONFLICT (device) DO UPDATE SET last_session ="
                          " max(coalesce(last_session, 0), excluded.last_session)",
                          [(d, end, end) for d, end in ends.items()])
            t.execute("INSERT OR REPLACE INTO supervision_scan (one, received_to) VALUES (0, ?)", (newest,))
