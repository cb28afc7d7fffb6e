# The gateway's status page (optional, --status-listen), for the duty officer and the
# technician on site: each device online or not, when it was last heard, its online rate
# over 24 h, its link's faults, firmware and registry entry; the active alarms; recent
# events; the upload queues and the platform link; a chart of one device's readings.
#
#   /              the page (gateway/status.html: no build step, it polls the JSON below)
#   /api/status    everything on the page, as JSON (and the counters the tests read)
#   /api/readings?device=ID   a device's latest telemetry, for the chart
#   /metrics       the counters in the Prometheus text format: no device ids in it
#
# Everything comes from the store (one home for each fact: what was received is what the
# page shows), read in one hop to the database thread per poll, and shared by every
# viewer for CACHE_S. docs/status-page.md says what each column means and what is missing.
from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from edge.codec import BY_NAME
from edge.codes import CODES
from gateway import login
from gateway.broker import is_loopback
from gateway.http import Handler, Refused, Request, server_tls
from gateway.login import BasicAuth
from gateway.metrics import PREFIX, Metrics, family
from gateway.registry import Device
from gateway.sqlite import DbThread
from gateway.store import Store
from gateway.uplink import ReviewError

DAY_S = 86400.0
RECENT_EVENTS = 25
READINGS_MAX = 500
CACHE_S = 1.0                     # every viewer polling at once costs one read of the store
REVIEW_CACHE_S = 60.0             # the review is asked of the platform at most once a minute
PAGE = Path(__file__).with_name("status.html")
# reports the link-quality columns count over 24 h, by the column's name
LINK_REPORTS = {"device.comm_fault": "comm_faults", "device.poll_fault": "poll_faults",
                "device.outbox_drop": "outbox_drops"}
# ... and the events it sent again that were already stored (Store.resends)
LINK_COLUMNS = ("resends",) + tuple(LINK_REPORTS.values())


def online_rate(history: list[tuple[float, str]], since: float, now: float) -> float | None:
    """The share of [since, now] a device was online, from its status changes (led by the
    one in force at since, as Store.status_history gives them). Time before its first
    known status does not count; None when nothing is known."""
    if not history or now <= since:
        return None
    start = max(since, history[0][0])
    online = 0.0
    for (at, status), nxt in zip(history, [h[0] for h in history[1:]] + [now]):
        if status == "online":
            online += max(0.0, min(nxt, now) - max(at, since))
    return online / (now - start) if now > start else None


def _event_json(received_at: float, e: Any) -> dict[str, Any]:
    kind = CODES[e.code][1] if e.code in CODES else e.kind
    return {"device": e.device, "type": e.type, "kind": kind, "action": e.action, "received_at": received_at,
            "t": e.t if e.clock_set else None, "values": e.values, "id": "%s:%d:%d" % (e.device, e.boot, e.seq)}


def collect(store: Store, registry: list[Device], now: float) -> dict[str, Any]:
    """What the page shows, from the store (blocking: on the DbThread)."""
    since = now - DAY_S
    statuses = store.device_statuses()
    firmware = store.latest_of_type("device.boot")
    day = store.notable(since)
    link: dict[str, dict[str, int]] = {}
    for _, e in day:
        column = LINK_REPORTS.get(e.type)
        if column:
            counts = link.setdefault(e.device, dict.fromkeys(LINK_COLUMNS, 0))
            counts[column] += 1
    for device_id, n in store.resends(since).items():
        link.setdefault(device_id, dict.fromkeys(LINK_COLUMNS, 0))["resends"] = n
    known = {d.device_id: d for d in registry}
    devices = []
    for device_id in sorted(set(known) | set(statuses)):
        entry = known.get(device_id)
        status, status_at = statuses.get(device_id, ("unknown", None))
        last = store.last_received(device_id)
        devices.append({
            "id": device_id,
            "profile": entry.profile if entry else None,
            "registered": entry is not None,
            "config": dict(entry.extra) if entry else {},     # what the installer recorded: board, ...
            "status": status, "status_since": status_at,
            "last_seen": max((x for x in (last, status_at) if x is not None), default=None),
            "last_event": last,
            "online_24h": online_rate(store.status_history(device_id, since), since, now),
            "link_24h": link.get(device_id, dict.fromkeys(LINK_COLUMNS, 0)),
            "firmware": firmware[device_id][1].get("version") if device_id in firmware else None,
        })
    # an alarm is active while its latest event raised it: latest in the device's order,
    # (boot, seq), not by arrival, which a resend or another instance of a share group
    # can turn round
    latest: dict[tuple[str, str], tuple[float, Any]] = {}
    for received_at, e in store.notable(kind="alarm"):
        last = latest.get((e.device, e.type))
        if last is None or (e.boot, e.seq) > (last[1].boot, last[1].seq):
            latest[(e.device, e.type)] = (received_at, e)
    active = [_event_json(at, e) for at, e in sorted(latest.values(), key=lambda x: -x[0]) if e.action == "raise"]
    return {"devices": devices, "alarms": active,
            "events": [_event_json(at, e) for at, e in store.notable(limit=RECENT_EVENTS)],
            "store": store.counts(), "streams": store.stream_counts()}


def readings(store: Store, device: str, limit: int) -> dict[str, Any]:
    rows = store.latest_telemetry(device, limit)
    type_ = rows[0][1].type if rows else None
    fields = [f for f, _ in CODES[BY_NAME[type_]][2]] if type_ in BY_NAME else []
    return {"device": device, "type": type_, "fields": fields,
            "points": [{"received_at": at, "t": e.t if e.clock_set else None, "values": e.values}
                       for at, e in reversed(rows)]}


class StatusError(ValueError):
    """A status page that must not start as configured; the message says what to do."""


def exposure(host: str, logins_file: str | None, cert: str | None, key: str | None,
             insecure_plain: bool = False) -> tuple[BasicAuth | None, ssl.SSLContext | None]:
    """Secure by default: the page shows every device of the site and where it is, so
    beyond this machine it needs logins, and HTTPS for their passwords unless the caller
    accepts plain HTTP. Returns the login check (None: open) and the TLS context (None:
    plain). Raises StatusError."""
    if bool(cert) != bool(key):
        raise StatusError("--status-cert and --status-key go together: the certificate (PEM) and its private key")
    if not is_loopback(host):
        if not logins_file:
            raise StatusError("--status-listen %s is reachable from other machines: give --status-logins FILE"
                              " (made with `edge-gateway status-login add NAME --file FILE`), or listen on"
                              " 127.0.0.1" % host)
        if not cert and not insecure_plain:
            raise StatusError("--status-listen %s: logins over plain HTTP cross the network in clear; give"
                              " --status-cert FILE --status-key FILE, or --insecure-plain-status to accept"
                              " that" % host)
    try:
        checker = BasicAuth(login.load(logins_file)) if logins_file else None
    except login.LoginError as e:
        raise StatusError("--status-logins %s" % e) from None
    try:
        tls = server_tls(cert, key) if cert and key else None
    except OSError as e:                                  # ssl.SSLError is an OSError
        raise StatusError("--status-cert %s --status-key %s: %s" % (cert, key, e)) from None
    return checker, tls


@dataclass
class StatusSource:
    """What the page reads: the gateway's parts (gateway/service.py hands them in)."""
    gateway_id: str
    metrics: Metrics
    db: DbThread
    store: Callable[[], Store | None]           # None while the gateway stops
    registry: Callable[[], list[Device]]
    uplink_state: Callable[[], dict[str, Any]]  # the platform link, from gateway/uplink.py's counters
    # the platform's review of the devices (Uplink.review: raises ReviewError); None: no uplink
    review: Callable[[], Awaitable[dict[str, Any]]] | None = None


def status_routes(src: StatusSource) -> dict[str, Handler]:
    """The pages, for gateway.http.HttpServer."""
    cache: dict[str, Any] = {"at": -CACHE_S, "body": None}
    lock = asyncio.Lock()

    def store() -> Store:
        s = src.store()
        if s is None:
            raise Refused(503, "the gateway is stopping")
        return s

    async def overview() -> dict[str, Any]:
        async with lock:                                   # one read, however many poll at once
            if time.monotonic() - cache["at"] >= CACHE_S:
                now = time.time()
                body = await src.db.call(collect, store(), src.registry(), now)
                body.update(src.metrics.snapshot())          # "counters", "states": the tests read them
                body.update(gateway=src.gateway_id, now=now, uplink=src.uplink_state())
                cache.update(at=time.monotonic(), body=body)
            return dict(cache["body"])

    async def page(req: Request) -> tuple[str, bytes]:
        return "text/html; charset=utf-8", PAGE.read_bytes()

    async def status(req: Request) -> tuple[str, bytes]:
        return "application/json", json.dumps(await overview()).encode()

    async def chart(req: Request) -> tuple[str, bytes]:
        device = req.query.get("device", "")
        try:
            limit = int(req.query.get("limit", "120"))
        except ValueError:
            raise Refused(400, "limit: give a number of readings from 1 to %d" % READINGS_MAX) from None
        if not 1 <= limit <= READINGS_MAX:
            raise Refused(400, "limit: give a number of readings from 1 to %d" % READINGS_MAX)
        if device not in {d["id"] for d in (await overview())["devices"]}:
            raise Refused(404, "device %r: not known to this gateway" % device[:64])
        return "application/json", json.dumps(await src.db.call(readings, store(), device, limit)).encode()

    async def prometheus(req: Request) -> tuple[str, bytes]:
        body = await overview()
        text = src.metrics.prometheus()
        # what the page shows per device, as sums: a device id is never a label
        by_status: dict[str, int] = {"online": 0, "offline": 0, "unknown": 0}
        for d in body["devices"]:
            by_status[d["status"]] = by_status.get(d["status"], 0) + 1
        text += family(PREFIX + "_devices", "gauge", "Devices by their last MQTT status.",
                       [('status="%s"' % k, v) for k, v in by_status.items()])
        text += family(PREFIX + "_alarms_active", "gauge", "Alarms raised and not cleared, over all devices.",
                       [("", len(body["alarms"]))])
        text += family(PREFIX + "_store_events", "gauge", "Events in the store, by their upload state.",
                       [('state="%s"' % k, v) for k, v in body["store"].items() if k != "dropped"])
        for name in ("pending", "dropped"):
            text += family(PREFIX + "_stream_%s_events" % name, "gauge",
                           "Events per upload stream %s." % ("waiting for upload" if name == "pending"
                                                             else "dropped by the disk quota since the store was made"),
                           [('stream="%s"' % s, c[name]) for s, c in body["streams"].items()])
        rss = _rss_bytes()
        if rss is not None:
            text += family("process_resident_memory_bytes", "gauge", "Resident memory of the gateway process.",
                           [("", rss)])
        return "text/plain; version=0.0.4; charset=utf-8", text.encode()

    reviewed: dict[str, Any] = {"at": -REVIEW_CACHE_S, "body": None}

    async def review(req: Request) -> tuple[str, bytes]:
        """The platform's devices worst first (dispatch's outcomes: false-alarm rate, then
        alarms, then silence, over the platform's window), each with what this gateway's
        registry holds of it: the config and parameters the installer gave it."""
        if time.monotonic() - reviewed["at"] >= REVIEW_CACHE_S:
            body: dict[str, Any] = {"days": None, "devices": [], "error": None}
            try:
                if src.review is None:
                    raise ReviewError("this gateway has no uplink")
                body.update(await src.review())
            except ReviewError as e:
                body["error"] = "the platform's review: %s" % e
            known = {d.device_id: d for d in src.registry()}
            for d in body["devices"]:
                entry = known.get(d.get("device"))
                d["config"] = dict(entry.extra) if entry else None       # None: not this gateway's
            reviewed.update(at=time.monotonic(), body=body)
        return "application/json", json.dumps(reviewed["body"]).encode()

    return {"/": page, "/api/status": status, "/api/readings": chart, "/api/review": review, "/metrics": prometheus}


def _rss_bytes() -> int | None:
    """VmRSS of this process, from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
