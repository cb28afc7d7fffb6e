"""gateway/platform.py: the reference receiver over real HTTP on loopback."""
from __future__ import annotations

import asyncio
import copy
import gzip
import io
import json
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest

from gateway.platform import PlatformServer, event_line


def ev(device: str, seq: int, type_: str = "telemetry.elevator", t: int = 1_700_000_000,
       **values: Any) -> dict[str, Any]:
    return {"id": "%s:1:%d" % (device, seq), "device": device, "boot": 1, "seq": seq,
            "type": type_, "action": "report", "t": t, "clock_set": True, "values": values}


def body(*events: dict[str, Any]) -> dict[str, Any]:
    return {"gateway": "gw-1", "events": list(events)}


def with_platform(tmp_path: Path, fn: Callable[[aiohttp.ClientSession, PlatformServer], Awaitable[None]],
                  echo: Any = None) -> None:
    async def main() -> None:
        async with PlatformServer(tmp_path / "platform.sqlite", echo=echo) as p:
            async with aiohttp.ClientSession(base_url=p.url) as http:
                await fn(http, p)
    asyncio.run(main())


async def post(http: aiohttp.ClientSession, payload: Any, **kw: Any) -> tuple[int, Any]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with http.post("/v1/events", data=data,
                         headers={"Content-Type": "application/json", **kw.pop("headers", {})}) as r:
        return r.status, await r.json()


def test_post_is_idempotent_by_event_id(tmp_path: Path) -> None:
    async def fn(http: aiohttp.ClientSession, p: PlatformServer) -> None:
        batch = body(ev("elev-001", 1, floor=3), ev("elev-001", 2, floor=4))
        assert await post(http, batch) == (200, {"accepted": 2, "duplicates": 0})
        assert await post(http, batch) == (200, {"accepted": 0, "duplicates": 2})
        # an overlapping batch: only the new one counts
        assert await post(http, body(ev("elev-001", 2), ev("elev-001", 3))) == (
            200, {"accepted": 1, "duplicates": 1})
        async with http.get("/v1/events") as r:
            got = await r.json()
        assert [e["id"] for e in got["events"]] == ["elev-001:1:1", "elev-001:1:2", "elev-001:1:3"]
        assert got["events"][0]["values"] == {"floor": 3}
    with_platform(tmp_path, fn)


def test_gzip_body_is_accepted(tmp_path: Path) -> None:
    async def fn(http: aiohttp.ClientSession, p: PlatformServer) -> None:
        raw = gzip.compress(json.dumps(body(*[ev("wm-1", i, "telemetry.water_meter", flow=0.5)
                                              for i in range(300)])).encode())
        assert await post(http, raw, headers={"Content-Encoding": "gzip"}) == (
            200, {"accepted": 300, "duplicates": 0})
    with_platform(tmp_path, fn)


def _mutate(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set (or with value ... delete) a dotted path like 'events.0.boot' in a body."""
    def apply(b: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = b
        for k in parents:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if value is ...:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return apply


BAD = [
    ("gateway missing", _mutate("gateway", ...), "body.gateway"),
    ("no events", _mutate("events", []), "body.events"),
    ("event not an object", _mutate("events.0", 5), "events[0]"),
    ("negative boot", _mutate("events.0.boot", -1), "events[0].boot"),
    ("boolean seq", _mutate("events.0.seq", True), "events[0].seq"),
    ("id does not match", _mutate("events.1.id", "elev-001:1:9"), "events[1].id"),
    ("bad device id", _mutate("events.0.device", "a/b"), "events[0].device"),
    ("unknown action", _mutate("events.0.action", "explode"), "events[0].action"),
    ("clock_set as string", _mutate("events.0.clock_set", "yes"), "events[0].clock_set"),
    ("value as string", _mutate("events.0.values", {"floor": "7"}), "events[0].values.floor"),
    ("float time", _mutate("events.0.t", 1.5), "events[0].t"),
]


@pytest.mark.parametrize("what,mutate,field", BAD, ids=[b[0] for b in BAD])
def test_invalid_upload_is_refused_naming_the_field(tmp_path: Path, what: str,
                                                    mutate: Callable[[dict[str, Any]], None],
                                                    field: str) -> None:
    async def fn(http: aiohttp.ClientSession, p: PlatformServer) -> None:
        b = copy.deepcopy(body(ev("elev-001", 1, floor=1), ev("elev-001", 2)))
        mutate(b)
        status, answer = await post(http, b)
        assert status == 400
        assert answer["error"].startswith(field), answer
        # nothing of a refused request is stored, not even its valid events
        async with http.get("/v1/counts") as r:
            assert (await r.json())["total"] == 0
    with_platform(tmp_path, fn)


def test_not_json_is_refused(tmp_path: Path) -> None:
    async def fn(http: aiohttp.ClientSession, p: PlatformServer) -> None:
        status, answer = await post(http, b"{not json")
        assert status == 400 and answer["error"].startswith("body: not valid JSON")
        assert p.platform.metrics.get("platform.invalid") == 1
    with_platform(tmp_path, fn)


def test_counts_and_queries(tmp_path: Path) -> None:
    async def fn(http: aiohttp.ClientSession, p: PlatformServer) -> None:
        await post(http, body(ev("elev-001", 1, t=100), ev("elev-001", 2, t=200),
                              ev("elev-001", 3, "elevator.entrapment", t=300, floor=7),
                              ev("wm-7", 1, "telemetry.water_meter", t=150)))
        async with http.get("/v1/counts") as r:
            assert await r.json() == {"total": 4, "devices": {
                "elev-001": {"elevator.entrapment": 1, "telemetry.elevator": 2},
                "wm-7": {"telemetry.water_meter": 1}}}
        async with http.get("/v1/counts", params={"device": "wm-7"}) as r:
            assert await r.json() == {"total": 1, "devices": {"wm-7": {"telemetry.water_meter": 1}}}
        cases = [({"device": "elev-001"}, ["elev-001:1:1", "elev-001:1:2", "elev-001:1:3"]),
                 ({"type": "telemetry.water_meter"}, ["wm-7:1:1"]),
                 ({"since": "150"}, ["elev-001:1:2", "elev-001:1:3", "wm-7:1:1"]),
                 ({"device": "elev-001", "limit": "1"}, ["elev-001:1:1"])]
        for query, ids in cases:
            async with http.get("/v1/events", params=query) as r:
                assert [e["id"] for e in (await r.json())["events"]] == ids, query
        for query, field in (({"limit": "0"}, "query limit"), ({"since": "soon"}, "query since")):
            async with http.get("/v1/events", params=query) as r:
                assert r.status == 400 and (await r.json())["error"].startswith(field)
        async with http.get("/healthz") as r:
            assert r.status == 200 and await r.json() == {"status": "ok"}
    with_platform(tmp_path, fn)


def test_print_shows_each_new_event_once(tmp_path: Path) -> None:
    out = io.StringIO()

    async def fn(http: aiohttp.ClientSession, p: PlatformServer) -> None:
        alarm = ev("elev-001", 1, "elevator.entrapment", floor=7, duration_s=61)
        alarm["action"] = "raise"
        await post(http, body(alarm))
        await post(http, body(alarm))
    with_platform(tmp_path, fn, echo=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(" ALARM raise elevator.entrapment elev-001 floor=7 duration_s=61")


def test_event_line_without_wall_clock() -> None:
    e = ev("wm-7", 1, "telemetry.water_meter", t=42, flow=0.25, total=None)
    e["clock_set"] = False
    assert event_line(e) == "boot+42s TELEMETRY report telemetry.water_meter wm-7 flow=0.25"


def test_openapi_file_matches_the_receiver(tmp_path: Path) -> None:
    """docs/platform-api.yaml states the same facts as the code that serves them."""
    import yaml
    from edge.codes import ACTIONS
    from gateway.platform import (LIST_LIMIT_MAX, MAX_EVENTS, PLATFORM_KEY, create_app,
                                  validate_upload)
    from gateway.registry import DEVICE_ID_RE
    spec = yaml.safe_load((Path(__file__).parent.parent / "docs" / "platform-api.yaml").read_text())
    app = create_app(tmp_path / "p.sqlite")
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    documented = {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}
    assert {r for r in routes if r[0] != "HEAD"} == documented
    schemas = spec["components"]["schemas"]
    event = schemas["Event"]["properties"]
    assert tuple(event["action"]["enum"]) == ACTIONS
    assert event["device"]["pattern"] == DEVICE_ID_RE.pattern
    assert schemas["Upload"]["properties"]["events"]["maxItems"] == MAX_EVENTS
    limit = [p for p in spec["paths"]["/v1/events"]["get"]["parameters"] if p["name"] == "limit"][0]
    assert limit["schema"]["maximum"] == LIST_LIMIT_MAX
    example = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert validate_upload(example)[0] == "site-gw-01"
    app[PLATFORM_KEY].close()
