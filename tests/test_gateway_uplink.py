"""gateway/uplink.py: gateway -> real platform receiver over loopback HTTP, with faults."""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from edge.codec import decode
from gateway import auth
from gateway.metrics import Metrics
from gateway.platform import PlatformDB, PlatformServer, parse_json, read_body
from gateway.quota import Housekeeper, QuotaConfig
from gateway.service import Gateway, GatewayConfig
from gateway.sqlite import DbThread
from gateway.store import EventRow, PendingEvent, Store
from gateway.streams import DEFAULT_STREAMS, Stream, apply_options
from gateway.uplink import Outcome, Uplink, UplinkConfig, upload_body
from rig import Publisher, free_port, signed_event
from test_platform import Client
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
        self.redirect_next = 0           # answer 307 elsewhere without storing
        self.reject_ids: set[str] = set()  # answer 400 to any batch holding one of these
        self.posts: list[dict[str, Any]] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST":
            return await handler(request)
        # as sent: the platform runs with auto_decompress off and inflates with a cap
        body = parse_json(read_body(await request.read(), request.headers.get("Content-Encoding")))
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
        if self.redirect_next:
            self.redirect_next -= 1
            return web.Response(status=307, headers={"Location": "/v2/events"})
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


def provision(tmp_path: Path) -> None:
    """The platform knows gateway gw-test; its credentials are in the gateway's data directory."""
    db = PlatformDB(tmp_path / "platform.sqlite")
    db.add_gateway("gw-test").save(tmp_path / "gw" / auth.FILENAME)
    db.close()


def streams(*options: str) -> tuple[Stream, ...]:
    """The default streams with some fields changed, as --stream does."""
    return apply_options(DEFAULT_STREAMS, options)


def run(tmp_path: Path, broker_url: str, body: Callable[[Gateway, PlatformServer, Publisher, Faults],
                                                         Awaitable[None]], **cfg: Any) -> None:
    make_registry(tmp_path / "gw")
    provision(tmp_path)
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
    return "dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "telemetry.elevator", seq, {"floor": seq % 9})


def alarm(seq: int) -> tuple[str, bytes]:
    return "dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "elevator.entrapment", seq,
                                              {"floor": 7, "duration_s": 61}, action="raise")


async def platform_events(p: PlatformServer, **query: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        status, answer = await Client(http, p.url, p.add_gateway("reader")).get("/v1/events", limit="1000", **query)
        assert status == 200
        events: list[dict[str, Any]] = answer["events"]
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


def test_a_redirect_is_a_misconfiguration_retried_never_a_rejection(tmp_path: Path, mosquitto: Any) -> None:
    async def body(gw: Gateway, p: PlatformServer, pub: Publisher, faults: Faults) -> None:
        faults.redirect_next = 2
        await asyncio.to_thread(pub.publish_many, [alarm(1)])
        m = gw.metrics
        await m.wait_until(lambda: m.get("uplink.events") == 1, WAIT_S)
        assert m.get("uplink.failures") == 2 and m.get("uplink.rejected") == 0
        assert [e["seq"] for e in await platform_events(p)] == [1]
    run(tmp_path, mosquitto.url, body)


def test_unreachable_platform_logs_once_and_loses_nothing(tmp_path: Path, mosquitto: Any,
                                                          caplog: Any) -> None:
    """No platform at all for a while: one log line, then everything arrives once it is up."""
    make_registry(tmp_path / "gw")
    provision(tmp_path)
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


# ---- the lanes: each pending row read once, alarms at once --------------------------------

def count_reads(gw: Gateway) -> list[int]:
    """Make the store count the rows it hands to the upload lanes (one entry per read)."""
    store = gw.store
    assert store is not None
    reads: list[int] = []
    next_batch = store.next_batch

    def counted(rank: int, limit: int, after: int = 0) -> list[PendingEvent]:
        batch = next_batch(rank, limit, after)
        reads.append(len(batch))
        return batch
    store.next_batch = counted              # type: ignore[method-assign]
    return reads


def test_a_steady_stream_reads_each_pending_row_once(tmp_path: Path, mosquitto: Any) -> None:
    """Events trickling in, one commit after another while a telemetry batch fills: the
    lane reads each row once when the batch is due, not all pending rows on every commit."""
    async def body(gw: Gateway, p: PlatformServer, pub: Publisher, faults: Faults) -> None:
        reads = count_reads(gw)
        for i in range(0, 60, 3):
            await asyncio.to_thread(pub.publish_many, [telemetry(i), telemetry(i + 1),
                                                       alarm(i + 2) if i % 15 == 0 else telemetry(i + 2)])
        m = gw.metrics
        await m.wait_until(lambda: m.get("uplink.events") == 60, WAIT_S)
        assert m.get("ingest.commits") > 1
        assert sum(reads) == 60                  # every row handed out once, none twice
        pm = p.platform.metrics
        assert pm.get("platform.accepted") == 60 and pm.get("platform.duplicates") == 0
    run(tmp_path, mosquitto.url, body, streams=streams("telemetry:batch_age=0.3,batch_max=1000"))


def test_an_alarm_goes_at_once_while_telemetry_waits_for_its_batch(tmp_path: Path, mosquitto: Any) -> None:
    async def body(gw: Gateway, p: PlatformServer, pub: Publisher, faults: Faults) -> None:
        await asyncio.to_thread(pub.publish_many, [telemetry(i) for i in range(5)])
        await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") == 5, WAIT_S)
        await asyncio.to_thread(pub.publish_many, [alarm(5)])
        pm = p.platform.metrics
        await pm.wait_until(lambda: pm.get("platform.accepted") == 1, WAIT_S)
        assert [e["seq"] for e in await platform_events(p)] == [5]
        assert (await gw.stream_counts())["telemetry"]["pending"] == 5     # its batch is not due
    run(tmp_path, mosquitto.url, body, streams=streams("telemetry:batch_age=600,batch_max=1000"))


def test_rows_the_quota_deletes_are_not_sent_from_a_lane_s_memory(tmp_path: Path) -> None:
    """A lane holds the rows it has read until its batch is due. When the quota drops
    some of them meanwhile, the lane reads again: a dropped event is not uploaded, the
    others are, once."""
    cfg = streams("telemetry:batch_age=600,batch_max=10")
    store = Store.in_dir(tmp_path, cfg)

    async def main() -> list[int]:
        db, metrics = DbThread("test-db"), Metrics()
        uplink = Uplink(UplinkConfig("http://127.0.0.1:9", "gw-test", cfg), store, db, metrics)
        keeper = Housekeeper(QuotaConfig(max_bytes=1), store, db, metrics, on_delete=uplink.forget)
        sent: list[int] = []
        read, delivered = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        next_batch = store.next_batch

        def reading(rank: int, limit: int, after: int = 0) -> list[PendingEvent]:
            batch = next_batch(rank, limit, after)
            if batch:
                loop.call_soon_threadsafe(read.set)
            return batch
        store.next_batch = reading              # type: ignore[method-assign]

        async def deliver(http: Any, batch: list[PendingEvent], stream: str) -> Outcome:
            sent.extend(p.seq for p in batch)
            await db.call(store.mark_uploaded, batch)
            delivered.set()
            return Outcome.DONE
        uplink.deliver = deliver                # type: ignore[method-assign]
        task = asyncio.create_task(uplink.run())
        try:
            uplink.notify(await db.call(store.commit, [tele_row(i) for i in range(6)]))
            await asyncio.wait_for(read.wait(), WAIT_S)       # the lane holds 6 of its 10
            await keeper.check_quota()                         # drops every pending telemetry row
            assert metrics.get("quota.dropped.telemetry") == 6
            uplink.notify(await db.call(store.commit, [tele_row(i) for i in range(6, 16)]))
            await asyncio.wait_for(delivered.wait(), WAIT_S)
        finally:
            task.cancel()
            db.close()
        return sent
    assert asyncio.run(main()) == list(range(6, 16))


def test_a_batch_the_gateway_died_before_marking_goes_again_and_is_stored_once(tmp_path: Path) -> None:
    """The platform stored a batch, and the gateway died before it marked the batch
    uploaded: the restarted gateway sends the batch again, the platform keeps one copy."""
    cfg = streams("telemetry:batch_age=0")
    events = []
    for seq in range(10):
        payload = telemetry(seq)[1]
        events.append(EventRow.from_decoded(DEVICE, decode(payload), payload))

    class Crash(Exception):
        pass

    def die(batch: list[PendingEvent], now: float | None = None) -> int:
        raise Crash("the process ends here: nothing is marked")

    async def upload(p: PlatformServer, creds: auth.Credentials, crash: bool) -> Store:
        store = Store.in_dir(tmp_path / "gw", cfg)
        db, metrics = DbThread("test-db"), Metrics()
        uplink = Uplink(UplinkConfig(p.url, "gw-test", cfg, credentials=creds), store, db, metrics)
        if crash:
            await db.call(store.commit, events)
            store.mark_batch_uploaded = die     # type: ignore[method-assign]
        task = asyncio.create_task(uplink.run())   # a lane reads the store when it starts
        try:
            if crash:
                with pytest.raises(Crash):
                    await asyncio.wait_for(task, WAIT_S)
            else:
                await metrics.wait_until(lambda: metrics.get("uplink.events") == 10, WAIT_S)
        finally:
            task.cancel()
            db.close()
        return store

    async def main() -> None:
        async with PlatformServer(tmp_path / "platform.sqlite") as p:
            creds = p.add_gateway("gw-test")
            (await upload(p, creds, crash=True)).close()
            pm = p.platform.metrics
            assert pm.get("platform.accepted") == 10
            store = await upload(p, creds, crash=False)
            assert pm.get("platform.accepted") == 10 and pm.get("platform.duplicates") == 10
            assert sorted(e["seq"] for e in await platform_events(p)) == list(range(10))
            assert store.counts()["uploaded"] == 10 and store.counts()["pending"] == 0
            store.close()
    asyncio.run(main())


def tele_row(seq: int) -> EventRow:
    return EventRow(DEVICE, 1, seq, 1, "telemetry.elevator", "telemetry", "report",
                    1_700_000_000 + seq, True, {"floor": seq % 9})


def test_the_upload_body_is_the_api_s_json(tmp_path: Path) -> None:
    store = Store.in_dir(tmp_path)
    store.commit([tele_row(3)._replace(payload=b"\x01\x02"),
                  EventRow("wm-7", 2, 9, 0x32, "water.leak", "alarm", "raise", 120, False,
                           {"duration_s": 3600, "flow": 0.125}, b"\xff")])
    batch = store.next_batch(0, 10) + store.next_batch(1, 10)
    assert json.loads(upload_body('gw "north"', batch)) == {"gateway": 'gw "north"', "events": [
        {"id": "wm-7:2:9", "device": "wm-7", "boot": 2, "seq": 9, "type": "water.leak", "action": "raise",
         "t": 120, "clock_set": False, "values": {"duration_s": 3600, "flow": 0.125}, "payload": "/w=="},
        {"id": "elev-001:1:3", "device": "elev-001", "boot": 1, "seq": 3, "type": "telemetry.elevator",
         "action": "report", "t": 1_700_000_003, "clock_set": True, "values": {"floor": 3}, "payload": "AQI="}]}


def test_an_event_id_is_escaped_as_its_device_is(tmp_path: Path) -> None:
    # the id's literal is built from the device's (upload_body): a quote or a non-ASCII
    # character in a stored device name comes out escaped in both
    store = Store.in_dir(tmp_path)
    store.commit([tele_row(3)._replace(device='wm-"7"\u00e9\\')])
    sent = json.loads(upload_body("gw", store.next_batch(1, 10)))["events"][0]
    assert (sent["id"], sent["device"]) == ('wm-"7"\u00e9\\:1:3', 'wm-"7"\u00e9\\')
