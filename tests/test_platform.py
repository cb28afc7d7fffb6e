"""gateway/platform.py: the reference receiver over real HTTP on loopback, every request
signed by a provisioned gateway (gateway/auth.py)."""
from __future__ import annotations

import asyncio
import base64
import copy
import gzip
import io
import json
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

import aiohttp
import pytest
from yarl import URL

from edge import codec
from edge.codes import ACTIONS, code_of
from gateway import auth
from gateway.platform import PlatformServer, event_line

SECRET = "3c" * 32                    # every test device's key
GATEWAY = "gw-1"


def payload(device: str, seq: int, type_: str = "telemetry.elevator", t: int = 1_700_000_000,
            action: str = "report", boot: int = 1, secret: str = SECRET, **values: Any) -> bytes:
    """The signed bytes a device sends (edge/event.py)."""
    code = code_of(type_)
    return codec.encode(codec.Signer(bytes.fromhex(secret), device), code, ACTIONS.index(action), boot,
                        seq, t, codec.values_of(code, values))


def ev(device: str, seq: int, type_: str = "telemetry.elevator", t: int = 1_700_000_000,
       action: str = "report", boot: int = 1, secret: str = SECRET, **values: Any) -> dict[str, Any]:
    """One event as the upload API carries it: the fields, and the signed bytes they came from."""
    raw = payload(device, seq, type_, t, action, boot, secret, **values)
    e = codec.decode(raw)
    return {"id": "%s:%d:%d" % (device, boot, seq), "device": device, "boot": boot, "seq": seq,
            "type": type_, "action": action, "t": t, "clock_set": True, "values": e["values"],
            "payload": base64.b64encode(raw).decode()}


def body(*events: dict[str, Any], gateway: str = GATEWAY) -> dict[str, Any]:
    return {"gateway": gateway, "events": list(events)}


class Client:
    """A gateway's signed requests, made with aiohttp as any HTTP client could."""

    def __init__(self, http: aiohttp.ClientSession, url: str, creds: auth.Credentials | None) -> None:
        self.http, self.url, self.creds = http, url, creds

    def _headers(self, method: str, path: str, data: bytes, headers: dict[str, str]) -> dict[str, str]:
        signed = auth.sign(self.creds, method, path, data) if self.creds else {}
        return {**signed, **headers}

    async def post(self, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        hdrs = self._headers("POST", "/v1/events", data, {"Content-Type": "application/json", **(headers or {})})
        async with self.http.post(self.url + "/v1/events", data=data, headers=hdrs) as r:
            return r.status, await r.json()

    async def get(self, path: str, headers: dict[str, str] | None = None, **query: str) -> tuple[int, Any]:
        path_qs = path + ("?" + urlencode(query) if query else "")
        async with self.http.get(URL(self.url + path_qs, encoded=True),
                                 headers=self._headers("GET", path_qs, b"", headers or {})) as r:
            return r.status, await r.json()


def with_platform(tmp_path: Path, fn: Callable[[Client, PlatformServer], Awaitable[None]],
                  echo: Any = None, **server: Any) -> None:
    async def main() -> None:
        async with PlatformServer(tmp_path / "platform.sqlite", echo=echo, **server) as p:
            creds = p.add_gateway(GATEWAY)
            async with aiohttp.ClientSession() as http:
                await fn(Client(http, p.url, creds), p)
    asyncio.run(main())


def test_post_is_idempotent_by_event_id(tmp_path: Path) -> None:
    async def fn(c: Client, p: PlatformServer) -> None:
        batch = body(ev("elev-001", 1, floor=3), ev("elev-001", 2, floor=4))
        assert await c.post(batch) == (200, {"accepted": 2, "duplicates": 0})
        assert await c.post(batch) == (200, {"accepted": 0, "duplicates": 2})
        # an overlapping batch: only the new one counts
        assert await c.post(body(ev("elev-001", 2, floor=4), ev("elev-001", 3))) == (
            200, {"accepted": 1, "duplicates": 1})
        status, got = await c.get("/v1/events")
        assert [e["id"] for e in got["events"]] == ["elev-001:1:1", "elev-001:1:2", "elev-001:1:3"]
        assert got["events"][0]["values"]["floor"] == 3
        assert got["events"][0]["verified"] == "no_key"       # the platform holds no device keys yet
    with_platform(tmp_path, fn)


def test_gzip_body_is_accepted(tmp_path: Path) -> None:
    async def fn(c: Client, p: PlatformServer) -> None:
        raw = gzip.compress(json.dumps(body(*[ev("wm-1", i, "telemetry.water_meter", flow=0.5)
                                              for i in range(300)])).encode())
        assert await c.post(raw, headers={"Content-Encoding": "gzip"}) == (200, {"accepted": 300, "duplicates": 0})
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
    # SQLite's INTEGER holds 63 bits: this was an HTTP 500, retried for ever
    ("boot of 2^63", _mutate("events.0.boot", 2 ** 63), "events[0].boot"),
    ("seq of 2^64", _mutate("events.0.seq", 2 ** 64), "events[0].seq"),
    ("t past 32 bits", _mutate("events.0.t", 2 ** 32), "events[0].t"),
    ("value of 2^63", _mutate("events.0.values.floor", 2 ** 63), "events[0].values.floor"),
    ("id does not match", _mutate("events.1.id", "elev-001:1:9"), "events[1].id"),
    ("bad device id", _mutate("events.0.device", "a/b"), "events[0].device"),
    ("unknown action", _mutate("events.0.action", "explode"), "events[0].action"),
    ("clock_set as string", _mutate("events.0.clock_set", "yes"), "events[0].clock_set"),
    ("value as string", _mutate("events.0.values", {"floor": "7"}), "events[0].values.floor"),
    ("float time", _mutate("events.0.t", 1.5), "events[0].t"),
    ("no payload", _mutate("events.0.payload", ...), "events[0].payload"),
    ("payload not base64", _mutate("events.0.payload", "%%%"), "events[0].payload"),
    ("fields differ from the payload", _mutate("events.0.values.floor", 6), "events[0].values"),
]


@pytest.mark.parametrize("what,mutate,field", BAD, ids=[b[0] for b in BAD])
def test_invalid_upload_is_refused_naming_the_field(tmp_path: Path, what: str,
                                                    mutate: Callable[[dict[str, Any]], None],
                                                    field: str) -> None:
    async def fn(c: Client, p: PlatformServer) -> None:
        b = copy.deepcopy(body(ev("elev-001", 1, floor=1), ev("elev-001", 2)))
        mutate(b)
        status, answer = await c.post(b)
        assert status == 400
        assert answer["error"].startswith(field), answer
        assert p.platform.metrics.get("platform.refused.invalid") == 1
        # nothing of a refused request is stored, not even its valid events
        assert (await c.get("/v1/counts"))[1]["total"] == 0
    with_platform(tmp_path, fn)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_and_infinity_are_refused_not_stored(tmp_path: Path, number: str) -> None:
    async def fn(c: Client, p: PlatformServer) -> None:
        text = json.dumps(body(ev("elev-001", 1, floor=1))).replace('"floor": 1', '"floor": ' + number)
        status, answer = await c.post(text.encode())
        assert status == 400, answer
        assert "NaN" in answer["error"] or "Infinity" in answer["error"] or "finite" in answer["error"]
        assert p.platform.metrics.get("platform.invalid") == 1
        assert (await c.get("/v1/counts"))[1]["total"] == 0
    with_platform(tmp_path, fn)


def test_not_json_is_refused(tmp_path: Path) -> None:
    async def fn(c: Client, p: PlatformServer) -> None:
        status, answer = await c.post(b"{not json")
        assert status == 400 and answer["error"].startswith("body: not valid JSON")
        assert p.platform.metrics.get("platform.invalid") == 1
        status, answer = await c.post(b"[" * 100_000 + b"]" * 100_000)    # deeper than the parser goes
        assert status == 400 and answer["error"].startswith("body: not valid JSON")
    with_platform(tmp_path, fn)


def test_counts_and_queries(tmp_path: Path) -> None:
    async def fn(c: Client, p: PlatformServer) -> None:
        await c.post(body(ev("elev-001", 1, t=100), ev("elev-001", 2, t=200),
                          ev("elev-001", 3, "elevator.entrapment", t=300, floor=7),
                          ev("wm-7", 1, "telemetry.water_meter", t=150)))
        assert await c.get("/v1/counts") == (200, {"total": 4, "devices": {
            "elev-001": {"elevator.entrapment": 1, "telemetry.elevator": 2},
            "wm-7": {"telemetry.water_meter": 1}}})
        assert await c.get("/v1/counts", device="wm-7") == (
            200, {"total": 1, "devices": {"wm-7": {"telemetry.water_meter": 1}}})
        cases = [({"device": "elev-001"}, ["elev-001:1:1", "elev-001:1:2", "elev-001:1:3"]),
                 ({"type": "telemetry.water_meter"}, ["wm-7:1:1"]),
                 ({"since": "150"}, ["elev-001:1:2", "elev-001:1:3", "wm-7:1:1"]),
                 ({"device": "elev-001", "limit": "1"}, ["elev-001:1:1"])]
        for query, ids in cases:
            assert [e["id"] for e in (await c.get("/v1/events", **query))[1]["events"]] == ids, query
        for query, field in (({"limit": "0"}, "query limit"), ({"since": "soon"}, "query since"),
                             ({"since": str(2 ** 63)}, "query since")):
            status, answer = await c.get("/v1/events", **query)
            assert status == 400 and answer["error"].startswith(field)
        assert await c.get("/healthz") == (200, {"status": "ok"})
    with_platform(tmp_path, fn)


def test_print_shows_each_new_event_once(tmp_path: Path) -> None:
    out = io.StringIO()

    async def fn(c: Client, p: PlatformServer) -> None:
        alarm = ev("elev-001", 1, "elevator.entrapment", action="raise", floor=7, duration_s=61)
        await c.post(body(alarm))
        await c.post(body(alarm))
    with_platform(tmp_path, fn, echo=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(" ALARM raise elevator.entrapment elev-001 floor=7 duration_s=61")


def test_event_line_without_wall_clock() -> None:
    e = {"t": 42, "clock_set": False, "action": "report", "type": "telemetry.water_meter", "device": "wm-7",
         "values": {"flow": 0.25, "total": None}}
    assert event_line(e) == "boot+42s TELEMETRY report telemetry.water_meter wm-7 flow=0.25"


def test_openapi_file_matches_the_receiver(tmp_path: Path) -> None:
    """docs/platform-api.yaml states the same facts as the code that serves them."""
    import yaml
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
    assert spec["components"]["securitySchemes"]["gatewaySignature"]["name"] == "Authorization"
    assert auth.SCHEME in spec["components"]["securitySchemes"]["gatewaySignature"]["description"]
    example = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert validate_upload(example)[0] == "site-gw-01"
    app[PLATFORM_KEY].close()


def test_random_bodies_and_headers_raise_only_the_documented_errors() -> None:
    """A bounded fuzz of what the platform does with a request before it stores anything:
    every input ends in a value or a refusal with a message, never another exception."""
    import random
    from gateway.platform import TooLarge, ValidationError, parse_json, read_body, validate_upload
    rnd = random.Random(11)
    good = json.dumps(body(ev("elev-001", 1, floor=3), ev("wm-7", 2, "telemetry.water_meter", flow=0.5))).encode()
    for i in range(3000):
        data = bytearray(good if i % 3 else gzip.compress(good))
        for _ in range(rnd.randint(1, 8)):
            at = rnd.randrange(len(data))
            data[at:at + rnd.randint(0, 3)] = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 3)))
        try:
            validate_upload(parse_json(read_body(bytes(data), "gzip" if i % 3 == 0 else None)))
        except (ValidationError, TooLarge):
            pass
        header = "%s gateway=gw-1,ts=%d,nonce=%s,sig=%s" % (auth.SCHEME, rnd.randrange(10 ** 13), "ab" * 10, "0" * 64)
        chars = list(header)
        for _ in range(rnd.randint(0, 4)):
            chars[rnd.randrange(len(chars))] = chr(rnd.randrange(1, 0x3000))
        try:
            auth.parse("".join(chars))
        except auth.AuthError:
            pass
