"""gateway/uplink.py: gateway -> real platform receiver over loopback HTTP, with faults."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web

from gateway.platform import PlatformServer
from gateway.service import Gateway, GatewayConfig
from gateway.streams import DEFAULT_STREAMS, Stream, apply_options
from rig import Publisher, free_port, signed_event
from test_gateway_ingest import DEVICE, SECRET, make_registry

WAIT_S = 10.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Faults:
    """An aiohttp middleware for the platform: fails requests on demand, records them."""

    def __init__(self) -> None:
        self.fail_next = 0               # answer 500 to this many POSTs without storing
        self.lose_next = 0               # store, then answer 500: the response is "lost"
        self.hang_next = 0               # store, then hang past the gateway's upload timeout
        self.hang_s = 0.0
        self.reject_ids: set[str] = set()  # answer 400 to any batch holding one of these
        self.posts: list[dict[str, Any]] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST":
            return await handler(request)
        body = await request.json()
        ids = [e["id"] for e in body["events"]]
        post = {"ids": ids, "encoding": request.headers.get("Content-Encoding"),
                "key": request.headers.get("Idempotency-Key"), "status": None}
        self.posts.append(post)
        response = await self._answer(request, handler, ids)
        post["status"] = response.status
        return response

    async def _answer(self, request: web.Request, handler: Handler, ids: list[str]) -> web.StreamResponse:
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"error": "injected failure"}, status=500)
        if self.reject_ids.intersection(ids):
            return web.json_response({"error": "events[0].type: injected rejection"}, status=400)
        response = await handler(request)
        if self.lose_next:
            self.lose_next -= 1
            return web.json_response({"error": "injected lost response"}, status=502)
        if self.hang_next:
            self.hang_next -= 1
            await asyncio.sleep(self.hang_s)
        return response


def streams(*options: str) -> tuple[Stream, ...]:
    """The default streams with some fields changed, as --stream does."""
    return apply_options(DEFAULT_STREAMS, options)


def run(tmp_path: Path, broker_url: str, body: Callable[[Gateway, PlatformServer, Publisher, Faults],
                                                         Awaitable[None]], **cfg: Any) -> None:
    make_registry(tmp_path / "gw")
    faults = Faults()

    async def main() -> None:
        async with PlatformServer(tmp_path / "platform.sqlite", middlewares=[faults.middleware]) as p:
            config = GatewayConfig(data_dir=tmp_path / "gw", platform_url=p.url, broker=broker_url,
                                   gateway_id="gw-test", backoff_min=0.05, backoff_max=0.2, **cfg)
            async with Gateway(config) as gw:
                assert gw.broker_address is not None
                pub = await asyncio.to_thread(Publisher, gw.broker_address.host, gw.broker_address.port)
                try:
                    await body(gw, p, pub, faults)
                finally:
                    await asyncio.to_thread(pub.close)
    asyncio.run(main())


def telemetry(seq: int) -> tuple[str, bytes]:
    return "dev/%s/ev" % DEVICE, signed_event(SECRET, "telemetry.elevator", seq, {"floor": seq % 9})


def alarm(seq: int) -> tuple[str, bytes]:
    return "dev/%s/ev" % DEVICE, signed_event(SECRET, "elevator.entrapment", seq,
                                              {"floor": 7, "duration_s": 61}, action="raise")


async def platform_events(p: PlatformServer, **query: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(p.url + "/v1/events", params={"limit": "1000", **query}) as r:
            assert r.status == 200
            events: list[dict[str, Any]] = (await r.json())["events"]
            return events


def test_events_arrive_at_the_platform(tmp_path: Path, mosquitto: Any) -> None:
    async def body(gw: Gateway, p: PlatformServer, pub: Publisher, faults: Faults) -> None:
        await asyncio.to_thread(pub.publish_many, [telemetry(1), alarm(2), telemetry(3)])
        pm = p.platform.metrics
        await pm.wait_until(lambda: pm.get("platform.accepted") == 3, WAIT_S)
        events = await platform_events(p)
        assert [e["id"] for e in events] == ["elev-001:1:2", "elev-001:1:1", "elev-001:1:3"]
        alarm_ev = events[0]
        assert alarm_ev["type"] == "elevator.entrapment" and alarm_ev["action"] == "raise"
        assert alarm_ev["values"] == {"floor": 7, "duration_s": 61}
        assert alarm_ev["gateway"] == "gw-test" and alarm_ev["clock_set"] is True
        assert all(post["key"] for post in faults.posts)
        await gw.metrics.wait_until(lambda: gw.metrics.get("uplink.events") == 3, WAIT_S)
        assert await gw.store_counts() == {"stored": 3, "uploaded": 3, "rejected": 0, "pending": 0,
                                           "dropped": 0}
    run(tmp_path, mosquitto.url, body, streams=streams("telemetry:batch_age=0.2"))


def test_platform_failing_then_ok_delivers_everything_once(tmp_path: Path, mosquitto: Any) -> None:
    async def body(gw: Gateway, p: PlatformServer, pub: Publisher, faults: Faults) -> None:
        faults.fail_next = 3            # refused outright
        faults.lose_next = 2            # stored, but the gateway never hears so and retries
        await asyncio.to_thread(pub.publish_many, [telemetry(i) for i in range(40)] + [alarm(40)])
        await gw.metrics.wait_until(lambda: gw.metrics.get("uplink.events") == 41, WAIT_S)
        pm = p.platform.metrics
        assert pm.get("platform.accepted") == 41
        assert pm.get("platform.duplicates") > 0          # the retries after a lost response
        assert gw.metrics.get("uplink.failures") == 5
        assert sorted(e["seq"] for e in await platform_events(p)) == list(range(41))
    run(tmp_path, mosquitto.url, body, streams=streams("telemetry:batch_max=10"))


def test_alarm_is_not_stuck_behind_a_draining_backlog(tmp_path: Path, mosquitto: Any) -> None:
    """After an outage the telemetry backlog drains at its rate limit, in batches; an
    alarm raised meanwhile reaches the platform before the backlog is through."""
    async def body(gw: Gateway, p: PlatformServer, pub: Publisher, faults: Faults) -> None:
        faults.fail_next = 10 ** 6      # platform down while the backlog builds
        await asyncio.to_thread(pub.publish_many, [telemetry(i) for i in range(200)])
        await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") == 200, WAIT_S)
        faults.fail_next = 0
        pm = p.platform.metrics
        await pm.wait_until(lambda: pm.get("platform.accepted") >= 50, WAIT_S)
        await asyncio.to_thread(pub.publish_many, [alarm(200)])
        await pm.wait_until(lambda: bool(alarms_at(faults)), WAIT_S)
        # 200 events at 50/s take 4 s to drain; the alarm, one round trip in its own lane
        assert pm.get("platform.accepted") < 200
        await pm.wait_until(lambda: pm.get("platform.accepted") == 201, WAIT_S)
        stored = await platform_events(p)
        assert [e["seq"] for e in stored if e["type"] == "telemetry.elevator"] == list(range(200))
        delivered = [post for post in faults.posts if post["ids"]][-10:]
        assert max(len(post["ids"]) for post in delivered) == 50
        # a 50-event batch is over the gzip threshold: compressed
        assert {post["encoding"] for post in delivered if len(post["ids"]) == 50} == {"gzip"}
    run(tmp_path, mosquitto.url, body, streams=streams("telemetry:batch_max=50,rate=50"))


def alarms_at(faults: Faults) -> list[str]:
    return [i for post in faults.posts if post["status"] == 200 for i in post["ids"] if i.endswith(":200")]


def test_a_rejected_event_does_not_block_the_queue(tmp_path: Path, mosquitto: Any) -> None:
    async def body(gw: Gateway, p: PlatformServer, pub: Publisher, faults: Faults) -> None:
        faults.reject_ids = {"elev-001:1:5"}
        await asyncio.to_thread(pub.publish_many, [telemetry(i) for i in range(12)])
        m = gw.metrics
        await m.wait_until(lambda: m.get("uplink.events") == 11 and m.get("uplink.rejected") == 1, WAIT_S)
        assert sorted(e["seq"] for e in await platform_events(p)) == [i for i in range(12) if i != 5]
        assert await gw.store_counts() == {"stored": 12, "uploaded": 11, "rejected": 1, "pending": 0,
                                           "dropped": 0}
    run(tmp_path, mosquitto.url, body, streams=streams("telemetry:batch_age=0.2"))


def test_unreachable_platform_logs_once_and_loses_nothing(tmp_path: Path, mosquitto: Any,
                                                          caplog: Any) -> None:
    """No platform at all for a while: one log line, then everything arrives once it is up."""
    make_registry(tmp_path / "gw")
    port = free_port()

    async def main() -> None:
        config = GatewayConfig(data_dir=tmp_path / "gw", platform_url="http://127.0.0.1:%d" % port,
                               broker=mosquitto.url, gateway_id="gw-test", backoff_min=0.05,
                               backoff_max=0.1)
        async with Gateway(config) as gw:
            pub = await asyncio.to_thread(Publisher, mosquitto.host, mosquitto.port)
            await asyncio.to_thread(pub.publish_many, [alarm(0)] + [telemetry(i) for i in range(1, 6)])
            await asyncio.to_thread(pub.close)
            await gw.metrics.wait_until(lambda: gw.metrics.get("uplink.failures") >= 4, WAIT_S)
            async with PlatformServer(tmp_path / "platform.sqlite", port=port) as p:
                await gw.metrics.wait_until(lambda: gw.metrics.get("uplink.events") == 6, WAIT_S)
                assert sorted(e["seq"] for e in await platform_events(p)) == list(range(6))
    with caplog.at_level(logging.INFO, logger="gateway.uplink"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.uplink"]
    assert len([m for m in lines if "unavailable" in m]) == 1, lines
    assert len([m for m in lines if "reachable again" in m]) == 1, lines


def test_platform_hanging_past_the_timeout_stores_each_event_once(tmp_path: Path, mosquitto: Any) -> None:
    """The platform stores a batch but answers after the gateway gave up: the gateway
    sends it again, and the platform's event ids turn the repeat into duplicates."""
    async def body(gw: Gateway, p: PlatformServer, pub: Publisher, faults: Faults) -> None:
        faults.hang_next, faults.hang_s = 2, 1.5       # the upload timeout is 0.5 s
        await asyncio.to_thread(pub.publish_many, [alarm(0)] + [telemetry(i) for i in range(1, 30)])
        await gw.metrics.wait_until(lambda: gw.metrics.get("uplink.events") == 30, WAIT_S)
        pm = p.platform.metrics
        assert gw.metrics.get("uplink.failures") >= 1
        assert pm.get("platform.accepted") == 30 and pm.get("platform.duplicates") >= 1
        assert sorted(e["seq"] for e in await platform_events(p)) == list(range(30))
        assert await gw.store_counts() == {"stored": 30, "uploaded": 30, "rejected": 0, "pending": 0,
                                           "dropped": 0}
    run(tmp_path, mosquitto.url, body, upload_timeout=0.5, streams=streams("telemetry:batch_age=0.2"))
