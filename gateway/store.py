# The gateway's durable store: every verified event, committed before its MQTT ack,
# de-duplicated by (device, boot, seq), and the upload queue the uplink drains.
# Blocking sqlite3 calls: run them on one DbThread (gateway/sqlite.py).
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from gateway.sqlite import connect, transaction

FILENAME = "events.sqlite"

# Upload priority by event kind (edge.codes): alarms and reports jump the telemetry queue.
PRIORITY = {"alarm": 0, "report": 0, "telemetry": 1}

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    code INTEGER NOT NULL,
    type TEXT NOT NULL,
    kind TEXT NOT NULL,
    prio INTEGER NOT NULL,           -- PRIORITY[kind]: the upload order
    action TEXT NOT NULL,
    t INTEGER NOT NULL,              -- unix seconds, or seconds since boot when clock_set = 0
    clock_set INTEGER NOT NULL,
    values_json TEXT NOT NULL,
    received_at REAL NOT NULL,
    uploaded_at REAL,
    rejected_at REAL,                -- the platform refused it (4xx): kept, never retried
    reject_reason TEXT,
    PRIMARY KEY (device, boot, seq)
);
-- The upload queue: only pending rows, in (priority, arrival) order, so finding the
-- next batch stays cheap however much history the table holds.
CREATE INDEX IF NOT EXISTS events_pending ON events (prio)
    WHERE uploaded_at IS NULL AND rejected_at IS NULL;
CREATE TABLE IF NOT EXISTS device_status (
    device TEXT PRIMARY KEY,
    status TEXT NOT NULL,            -- online / offline (retained + LWT from the device)
    at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class EventRow:
    """One verified event as ingest hands it to the store."""
    device: str
    boot: int
    seq: int
    code: int
    type: str
    kind: str
    action: str
    t: int
    clock_set: bool
    values: dict[str, Any]

    @classmethod
    def from_decoded(cls, device: str, ev: dict[str, Any]) -> "EventRow":
        """From edge.codec.decode's dict."""
        return cls(device, ev["boot"], ev["seq"], ev["code"], ev["type"], ev["kind"],
                   ev["action"], ev["t"], ev["clock_set"], ev["values"])

    @property
    def id(self) -> str:
        return "%s:%d:%d" % (self.device, self.boot, self.seq)


# The columns that make an EventRow, in EventRow's field order.
ROW_COLUMNS = "device, boot, seq, code, type, kind, action, t, clock_set, values_json"


def _event_row(r: Sequence[Any]) -> EventRow:
    return EventRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), json.loads(r[9]))


@dataclass(frozen=True)
class PendingEvent:
    rowid: int
    row: EventRow
    received_at: float


@dataclass(frozen=True)
class CommitResult:
    inserted: int
    duplicates: int
    alarms: int                      # inserted events with priority 0


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)
        self.conn.executescript(SCHEMA)

    @classmethod
    def in_dir(cls, data_dir: str | Path) -> "Store":
        return cls(Path(data_dir) / FILENAME)

    def close(self) -> None:
        self.conn.close()

    def commit(self, events: Sequence[EventRow],
               statuses: Sequence[tuple[str, str]] = (), now: float | None = None) -> CommitResult:
        """Insert events and status changes in ONE transaction; duplicates are ignored.

        Returns how many were new and how many were already stored: a redelivered
        MQTT message or a device resending after a lost PUBACK is a duplicate.
        """
        now = time.time() if now is None else now
        inserted = alarms = 0
        with transaction(self.conn) as c:
            for e in events:
                prio = PRIORITY.get(e.kind, 1)
                cur = c.execute(
                    "INSERT OR IGNORE INTO events (device, boot, seq, code, type, kind, prio,"
                    " action, t, clock_set, values_json, received_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (e.device, e.boot, e.seq, e.code, e.type, e.kind, prio, e.action, e.t,
                     int(e.clock_set), json.dumps(e.values, separators=(",", ":")), now))
                if cur.rowcount:
                    inserted += 1
                    alarms += prio == 0
            for device, status in statuses:
                c.execute("INSERT INTO device_status (device, status, at) VALUES (?,?,?)"
                          " ON CONFLICT (device) DO UPDATE SET status = excluded.status, at = excluded.at",
                          (device, status, now))
        return CommitResult(inserted, len(events) - inserted, alarms)

    def next_batch(self, limit: int) -> list[PendingEvent]:
        """The next events to upload: alarms and reports first, then by arrival."""
        rows = self.conn.execute(
            "SELECT rowid, received_at, " + ROW_COLUMNS + " FROM events"
            " WHERE uploaded_at IS NULL AND rejected_at IS NULL"
            " ORDER BY prio, rowid LIMIT ?", (limit,)).fetchall()
        return [PendingEvent(r[0], _event_row(r[2:]), r[1]) for r in rows]

    def _mark(self, rowids: Iterable[int], sql: str, params: tuple[Any, ...]) -> int:
        ids = list(rowids)
        n = 0
        with transaction(self.conn) as c:
            # chunks: SQLite limits the number of host parameters per statement
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                n += c.execute(sql % ",".join("?" * len(chunk)), params + tuple(chunk)).rowcount
        return n

    def mark_uploaded(self, rowids: Iterable[int], now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self._mark(rowids, "UPDATE events SET uploaded_at = ? WHERE rowid IN (%s)", (now,))

    def mark_rejected(self, rowids: Iterable[int], reason: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self._mark(rowids, "UPDATE events SET rejected_at = ?, reject_reason = ?"
                          " WHERE rowid IN (%s)", (now, reason))

    def pending_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM events"
                                     " WHERE uploaded_at IS NULL AND rejected_at IS NULL").fetchone()[0])

    def counts(self) -> dict[str, int]:
        """Totals for the status page and the tests."""
        r = self.conn.execute(
            "SELECT count(*), count(uploaded_at), count(rejected_at) FROM events").fetchone()
        return {"stored": r[0], "uploaded": r[1], "rejected": r[2],
                "pending": r[0] - r[1] - r[2]}

    def events(self, device: str | None = None) -> list[EventRow]:
        """All stored events in arrival order (tests, debugging)."""
        sql = "SELECT " + ROW_COLUMNS + " FROM events"
        args: tuple[Any, ...] = ()
        if device is not None:
            sql += " WHERE device = ?"
            args = (device,)
        rows = self.conn.execute(sql + " ORDER BY rowid", args).fetchall()
        return [_event_row(r) for r in rows]

    def device_status(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT device, status FROM device_status").fetchall())

    def prune_uploaded(self, older_than: float) -> int:
        """Delete events uploaded before a unix time; the platform holds them now."""
        with transaction(self.conn) as c:
            return c.execute("DELETE FROM events WHERE uploaded_at < ?", (older_than,)).rowcount
