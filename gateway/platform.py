# The reference district-platform receiver: what the uplink talks to in tests and the
# demo, and a statement of the API in code (docs/platform-api.yaml is the same in
# OpenAPI). Stores events idempotently by event id in its own SQLite file.
#
#   POST /v1/events   {"gateway": id, "events": [...]} -> {"accepted": n, "duplicates": m}
#   GET  /v1/events?device=&type=&since=&limit=
#   GET  /v1/counts?device=
#   GET  /healthz
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Iterable, TextIO

from aiohttp import web

from edge import ids
from edge.codec import BY_NAME
from edge.codes import ACTIONS, CODES
from gateway.metrics import Metrics
from gateway.sqlite import DbThread, connect, transaction

log = logging.getLogger(__name__)

MAX_EVENTS = 5000                    # per POST; the gateway sends at most 500
MAX_BODY = 16 * 1024 * 1024          # after gzip decompression
LIST_LIMIT_DEFAULT = 100
LIST_LIMIT_MAX = 100_000           # a reference receiver: tests and the demo read all

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,             -- <device>:<boot>:<seq>
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    action TEXT NOT NULL,
    t INTEGER NOT NULL,
    clock_set INTEGER NOT NULL,
    values_json TEXT NOT NULL,
    gateway TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_device_t ON events (device, t);
"""


class ValidationError(ValueError):
    """A request that breaks the API; str() names the bad field."""


# ---- validation: one function per JSON shape --------------------------------------

def _int(obj: dict[str, Any], key: str, where: str, minimum: int = 0) -> int:
    v = obj.get(key)
    # bool is an int in Python, but true is not a sequence number
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ValidationError("%s.%s: must be an integer >= %d" % (where, key, minimum))
    return v


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v or len(v) > 128:
        raise ValidationError("%s.%s: must be a non-empty string of at most 128 characters" % (where, key))
    return v


def validate_event(e: Any, where: str) -> dict[str, Any]:
    if not isinstance(e, dict):
        raise ValidationError("%s: must be an object" % where)
    device = _str(e, "device", where)
    try:
        ids.check(device)
    except ValueError as e:
        raise ValidationError("%s.device: %s" % (where, e)) from None
    boot = _int(e, "boot", where)
    seq = _int(e, "seq", where)
    eid = _str(e, "id", where)
    if eid != "%s:%d:%d" % (device, boot, seq):
        raise ValidationError("%s.id: must be '<device>:<boot>:<seq>' (%s:%d:%d), got %r"
                              % (where, device, boot, seq, eid))
    type_ = _str(e, "type", where)
    action = e.get("action")
    if action not in ACTIONS:
        raise ValidationError("%s.action: must be one of %s" % (where, ", ".join(ACTIONS)))
    t = _int(e, "t", where)
    clock_set = e.get("clock_set")
    if not isinstance(clock_set, bool):
        raise ValidationError("%s.clock_set: must be true or false" % where)
    values = e.get("values")
    if not isinstance(values, dict):
        raise ValidationError("%s.values: must be an object" % where)
    for k, v in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValidationError("%s.values.%s: must be a number or null" % (where, k))
    return {"id": eid, "device": device, "boot": boot, "seq": seq, "type": type_,
            "action": action, "t": t, "clock_set": clock_set, "values": values}


def validate_upload(body: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(body, dict):
        raise ValidationError("body: must be a JSON object with gateway and events")
    gateway = _str(body, "gateway", "body")
    events = body.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS:
        raise ValidationError("body.events: must be a list of 1 to %d events" % MAX_EVENTS)
    return gateway, [validate_event(e, "events[%d]" % i) for i, e in enumerate(events)]


def _query_int(q: Any, key: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    raw = q.get(key)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ValidationError("query %s: %r is not an integer" % (key, raw)) from None
    if v < lo or (hi is not None and v > hi):
        raise ValidationError("query %s: must be between %d and %s" % (key, lo, hi if hi is not None else "any"))
    return v


# ---- storage --------------------------------------------------------------------------

class PlatformDB:
    """The platform's event table. Blocking: call through a DbThread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.conn = connect(self.path)
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def add(self, gateway: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert what is new, in one transaction; returns the new events."""
        now = time.time()
        new = []
        with transaction(self.conn) as c:
            for e in events:
                cur = c.execute(
                    "INSERT OR IGNORE INTO events (id, device, boot, seq, type, action, t,"
                    " clock_set, values_json, gateway, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (e["id"], e["device"], e["boot"], e["seq"], e["type"], e["action"], e["t"],
                     int(e["clock_set"]), json.dumps(e["values"], separators=(",", ":")), gateway, now))
                if cur.rowcount:
                    new.append(e)
        return new

    def list(self, device: str | None = None, type_: str | None = None, since: int | None = None,
             limit: int = LIST_LIMIT_DEFAULT) -> list[dict[str, Any]]:
        """Events in arrival order; since filters on the event time t (unix seconds)."""
        where, args = [], []
        for sql, arg in (("device = ?", device), ("type = ?", type_), ("t >= ?", since)):
            if arg is not None:
                where.append(sql)
                args.append(arg)
        rows = self.conn.execute(
            "SELECT id, device, boot, seq, type, action, t, clock_set, values_json, gateway,"
            " received_at FROM events" + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY rowid LIMIT ?", (*args, limit)).fetchall()
        return [{"id": r[0], "device": r[1], "boot": r[2], "seq": r[3], "type": r[4],
                 "action": r[5], "t": r[6], "clock_set": bool(r[7]), "values": json.loads(r[8]),
                 "gateway": r[9], "received_at": r[10]} for r in rows]

    def counts(self, device: str | None = None) -> dict[str, Any]:
        """Stored events per device and type: what a gateway's delivery is checked against."""
        devices: dict[str, dict[str, int]] = {}
        total = 0
        where, args = ("WHERE device = ? ", (device,)) if device else ("", ())
        for device, type_, n in self.conn.execute(
                "SELECT device, type, count(*) FROM events " + where
                + "GROUP BY device, type ORDER BY device, type", args):
            devices.setdefault(device, {})[type_] = n
            total += n
        return {"total": total, "devices": devices}


# ---- the human line for --print ---------------------------------------------------------

def event_line(e: dict[str, Any]) -> str:
    """'12:03:04 ALARM raise elevator.entrapment elev-001 floor=7 duration_s=61'."""
    when = time.strftime("%H:%M:%S", time.localtime(e["t"])) if e["clock_set"] else "boot+%ds" % e["t"]
    code = BY_NAME.get(e["type"])
    kind = CODES[code][1].upper() if code is not None else "EVENT"
    values = " ".join("%s=%s" % (k, v) for k, v in e["values"].items() if v is not None)
    return " ".join(p for p in (when, kind, e["action"], e["type"], e["device"], values) if p)


# ---- HTTP --------------------------------------------------------------------------------

def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Platform:
    """The receiver's handlers and state; create_app() wires them into an app."""

    def __init__(self, db_path: str | Path, echo: TextIO | None = None) -> None:
        self.db = PlatformDB(db_path)
        self.thread = DbThread("platform-db")
        self.echo = echo
        # platform.posts / .accepted / .duplicates / .invalid; tests await them
        self.metrics = Metrics()

    async def post_events(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as e:
            self.metrics.inc("platform.invalid")
            return _error(400, "body: not valid JSON (%s)" % e)
        try:
            gateway, events = validate_upload(body)
        except ValidationError as e:
            self.metrics.inc("platform.invalid")
            return _error(400, str(e))
        new = await self.thread.call(self.db.add, gateway, events)
        if self.echo is not None:
            for event in new:
                print(event_line(event), file=self.echo, flush=True)
        self.metrics.inc("platform.accepted", len(new))
        self.metrics.inc("platform.duplicates", len(events) - len(new))
        self.metrics.inc("platform.posts")
        return web.json_response({"accepted": len(new), "duplicates": len(events) - len(new)})

    async def get_events(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            since = _query_int(q, "since", None, 0)
            limit = _query_int(q, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)
        except ValidationError as e:
            return _error(400, str(e))
        events = await self.thread.call(self.db.list, q.get("device") or None, q.get("type") or None,
                                        since, limit)
        return web.json_response({"events": events, "count": len(events)})

    async def get_counts(self, request: web.Request) -> web.Response:
        return web.json_response(await self.thread.call(self.db.counts, request.query.get("device") or None))

    async def healthz(self, request: web.Request) -> web.Response:
        await self.thread.call(self.db.conn.execute, "SELECT 1")
        return web.json_response({"status": "ok"})

    def close(self) -> None:
        self.thread.close()
        self.db.close()


PLATFORM_KEY: web.AppKey[Platform] = web.AppKey("platform", Platform)


def create_app(db_path: str | Path, echo: TextIO | None = None,
               middlewares: Iterable[Any] = ()) -> web.Application:
    """The receiver as an aiohttp app; app[PLATFORM_KEY] is its Platform.

    middlewares: extra aiohttp middlewares, e.g. a test's fault injector.
    """
    platform = Platform(db_path, echo)
    app = web.Application(client_max_size=MAX_BODY, middlewares=list(middlewares))
    app[PLATFORM_KEY] = platform
    app.router.add_post("/v1/events", platform.post_events)
    app.router.add_get("/v1/events", platform.get_events)
    app.router.add_get("/v1/counts", platform.get_counts)
    app.router.add_get("/healthz", platform.healthz)

    async def close(app: web.Application) -> None:
        platform.close()
    app.on_cleanup.append(close)
    return app


class PlatformServer:
    """The receiver on a loopback port, started and stopped in-process.

        async with PlatformServer(tmp_path / "platform.sqlite") as p:
            ... p.url ..., await p.platform.metrics.wait_until(lambda: ..., timeout)
    """

    def __init__(self, db_path: str | Path, host: str = "127.0.0.1", port: int = 0,
                 echo: TextIO | None = None, middlewares: Iterable[Any] = ()) -> None:
        self.app = create_app(db_path, echo, middlewares)
        self.platform = self.app[PLATFORM_KEY]
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return "http://%s:%d" % (self.host, self.port)

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        log.info("platform receiver listening on %s (database %s)", self.url, self.platform.db.path)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "PlatformServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
