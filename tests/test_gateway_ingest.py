"""gateway/ingest.py: real mosquitto (or the embedded amqtt broker) -> gateway -> SQLite."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable

from gateway.broker import device_password
from gateway.platform import PlatformServer
from gateway.registry import Registry
from gateway.service import Gateway, GatewayConfig
from gateway.store import Store
from rig import Publisher, free_port, signed_event, start_mosquitto, stop_mosquitto

SECRET = "11" * 32
OTHER_SECRET = "22" * 32
DEVICE = "elev-001"
WAIT_S = 5.0


def make_registry(data: Path, **devices: str) -> None:
    reg = Registry.in_dir(data)
    for device_id, secret in (devices or {DEVICE: SECRET}).items():
        reg.add(device_id, "elevator", secret, replace=True)
    reg.save()


def run_with_gateway(tmp_path: Path, broker: str,
                     body: Callable[[Gateway, Publisher], Awaitable[Any]], **cfg: Any) -> None:
    """Platform receiver + gateway + a publisher, all real, torn down in order."""
    async def main() -> None:
        async with PlatformServer(tmp_path / "platform.sqlite") as platform:
            config = GatewayConfig(data_dir=tmp_path / "gw", platform_url=platform.url,
                                   broker=broker, listen="127.0.0.1:0", gateway_id="gw-test", **cfg)
            async with Gateway(config) as gw:
                assert gw.broker_address is not None
                pub = await asyncio.to_thread(Publisher, gw.broker_address.host, gw.broker_address.port,
                                              DEVICE, DEVICE, device_password(SECRET))
                try:
                    await body(gw, pub)
                finally:
                    await asyncio.to_thread(pub.close)
    make_registry(tmp_path / "gw")
    asyncio.run(main())


async def stored(gw: Gateway, device: str | None = None) -> list[Any]:
    """Read through the gateway's DB thread, the only one that uses its connection."""
    assert gw.store is not None
    return await gw.db.call(gw.store.events, device)


def test_valid_events_are_stored_once(tmp_path: Path, mosquitto: Any) -> None:
    async def body(gw: Gateway, pub: Publisher) -> None:
        tele = signed_event(DEVICE, SECRET, "telemetry.elevator", 1, {"floor": 3, "speed": 1.25})
        alarm = signed_event(DEVICE, SECRET, "elevator.entrapment", 2, {"floor": 7, "duration_s": 61},
                             action="raise")
        unset = signed_event(DEVICE, SECRET, "device.boot", 0, {"version": 3}, boot=2, t=12, clock_set=False)
        for payload in (tele, alarm, unset, tele):      # the last one is a redelivery
            await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE, payload)
        await asyncio.to_thread(pub.publish, "dev/%s/status" % DEVICE, b"online", True)
        m = gw.metrics
        await m.wait_until(lambda: m.get("ingest.stored") + m.get("ingest.duplicates") == 4
                           and m.get("ingest.status") == 1, WAIT_S)
        assert m.get("ingest.stored") == 3 and m.get("ingest.duplicates") == 1
        rows = await stored(gw)
        assert [(r.device, r.boot, r.seq, r.type, r.action) for r in rows] == [
            (DEVICE, 1, 1, "telemetry.elevator", "report"),
            (DEVICE, 1, 2, "elevator.entrapment", "raise"),
            (DEVICE, 2, 0, "device.boot", "report")]
        assert rows[0].values["floor"] == 3 and rows[0].values["speed"] == 1.25
        assert rows[0].values["door"] is None
        assert rows[2].clock_set is False and rows[2].t == 12
        assert gw.store is not None
        assert await gw.db.call(gw.store.device_status) == {DEVICE: "online"}
        assert m.rejected() == {}
    run_with_gateway(tmp_path, mosquitto.url, body)


def test_bad_messages_are_counted_not_stored(tmp_path: Path, mosquitto: Any) -> None:
    async def body(gw: Gateway, pub: Publisher) -> None:
        good = signed_event(DEVICE, SECRET, "telemetry.elevator", 5, {"floor": 1})
        bad = [
            ("dev/%s/ev" % DEVICE, b"\x00garbage, not an event"),                          # malformed
            ("dev/%s/ev" % DEVICE, good[:-1]),                                             # truncated
            ("dev/%s/ev" % DEVICE, signed_event(DEVICE, OTHER_SECRET, "telemetry.elevator", 6)),   # wrong key
            ("dev/elev-999/ev", signed_event(DEVICE, SECRET, "telemetry.elevator", 7)),            # unknown
            ("dev/%s/status" % DEVICE, b"sleepy"),                                         # bad status
        ]
        for topic, payload in bad:
            await asyncio.to_thread(pub.publish, topic, payload)
        # the gateway keeps working: the next valid event is stored
        await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE, good)
        m = gw.metrics
        await m.wait_until(lambda: m.get("ingest.stored") == 1, WAIT_S)
        assert m.get("ingest.received") == 6
        assert m.rejected() == {"malformed": 2, "bad_mac": 1, "unknown_device": 1, "bad_status": 1}
        assert [(r.device, r.seq) for r in await stored(gw)] == [(DEVICE, 5)]
    run_with_gateway(tmp_path, mosquitto.url, body)


def test_device_added_while_running_is_accepted(tmp_path: Path, mosquitto: Any) -> None:
    async def body(gw: Gateway, pub: Publisher) -> None:
        make_registry(tmp_path / "gw", **{DEVICE: SECRET, "wm-7": OTHER_SECRET})
        await asyncio.to_thread(pub.publish, "dev/wm-7/ev",
                                signed_event("wm-7", OTHER_SECRET, "water.leak", 1, {"duration_s": 3600}))
        await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") == 1, WAIT_S)
        assert [r.device for r in await stored(gw)] == ["wm-7"]
    run_with_gateway(tmp_path, mosquitto.url, body)


def test_rotated_secret_is_accepted_without_a_restart_and_the_old_one_for_a_grace_period(
        tmp_path: Path, mosquitto: Any) -> None:
    # edgectl provision --rotate rewrites the registry while the gateway runs: the first
    # event under the new key is stored; one the device signed before, still in its outbox,
    # is stored too during the grace period, counted, and acknowledged under both keys (the
    # device may not have its new key yet, or have it with the old event still to send);
    # a key replaced without a grace period (one that leaked) stops working at once
    async def body(gw: Gateway, pub: Publisher) -> None:
        assert gw.broker_address is not None
        host, port = gw.broker_address.host, gw.broker_address.port
        old = await asyncio.to_thread(AckListener, host, port, DEVICE, SECRET)
        new = await asyncio.to_thread(AckListener, host, port, DEVICE, OTHER_SECRET)
        try:
            make_registry(tmp_path / "gw", **{DEVICE: OTHER_SECRET})
            await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE,
                                    signed_event(DEVICE, OTHER_SECRET, "device.boot", 1, {"version": 1}, boot=2))
            await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE,
                                    signed_event(DEVICE, SECRET, "device.boot", 2, {"version": 1}, boot=2))
            m = gw.metrics
            await m.wait_until(lambda: m.get("ingest.stored") == 2 and m.get("ingest.old_key") == 1, WAIT_S)
            assert [(r.boot, r.seq) for r in await stored(gw)] == [(2, 1), (2, 2)]
            deadline = asyncio.get_running_loop().time() + WAIT_S
            # each also hears the acks under the other key, and refuses them
            while (new.acked(), old.acked(), new.refused, old.refused) != ({(2, 1), (2, 2)}, {(2, 2)}, 1, 2):
                assert asyncio.get_running_loop().time() < deadline, (new.ranges, old.ranges)
                await asyncio.sleep(0.05)

            reg = Registry.in_dir(tmp_path / "gw")
            reg.add(DEVICE, "elevator", "33" * 32, replace=True, grace_s=0)
            reg.save()
            await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE,
                                    signed_event(DEVICE, OTHER_SECRET, "device.boot", 3, {"version": 1}, boot=2))
            await m.wait_until(lambda: m.rejected() == {"bad_mac": 1}, WAIT_S)
            assert m.get("ingest.stored") == 2
        finally:
            old.close()
            new.close()
    run_with_gateway(tmp_path, mosquitto.url, body)


def test_burst_is_committed_in_batches(tmp_path: Path, mosquitto: Any) -> None:
    n = 300

    async def body(gw: Gateway, pub: Publisher) -> None:
        msgs = [("dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "telemetry.elevator", i, {"floor": i % 9}))
                for i in range(n)]
        await asyncio.to_thread(pub.publish_many, msgs)
        await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") == n, WAIT_S)
        # many messages per transaction; mosquitto's in-flight window (20) bounds a batch
        assert gw.metrics.get("ingest.commits") <= n // 2
    run_with_gateway(tmp_path, mosquitto.url, body)


def test_events_sent_while_gateway_is_down_arrive_after_restart(tmp_path: Path, mosquitto: Any) -> None:
    """The persistent session: mosquitto queues QoS 1 messages for the stopped gateway."""
    make_registry(tmp_path / "gw")

    async def main() -> None:
        cfg = GatewayConfig(data_dir=tmp_path / "gw", platform_url="http://127.0.0.1:9",
                            broker=mosquitto.url, gateway_id="gw-test")
        async with Gateway(cfg):
            pass                                  # first run: creates the session + subscription
        pub = await asyncio.to_thread(Publisher, mosquitto.host, mosquitto.port)
        await asyncio.to_thread(pub.publish_many, [
            ("dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "telemetry.elevator", i)) for i in range(5)])
        await asyncio.to_thread(pub.close)
        async with Gateway(cfg) as gw:
            await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") == 5, WAIT_S)
        store = Store.in_dir(tmp_path / "gw")
        assert [r.seq for r in store.events()] == [0, 1, 2, 3, 4]
        store.close()
    asyncio.run(main())


async def published_and_stored(gw: Gateway, port: int) -> None:
    """One event published on the broker at port, then stored by the gateway (its first)."""
    pub = await asyncio.to_thread(Publisher, "127.0.0.1", port)
    await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "telemetry.elevator", 1))
    await asyncio.to_thread(pub.close)
    await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") == 1, WAIT_S)


def test_gateway_reconnects_after_a_broker_restart(tmp_path: Path) -> None:
    """A broker without persistence forgets the subscription; the gateway subscribes again."""
    make_registry(tmp_path / "gw")
    proc, port = start_mosquitto(tmp_path)

    async def main() -> None:
        nonlocal proc
        cfg = GatewayConfig(data_dir=tmp_path / "gw", platform_url="http://127.0.0.1:9",
                            broker="mqtt://127.0.0.1:%d" % port, gateway_id="gw-test")
        async with Gateway(cfg) as gw:
            m = gw.metrics
            await asyncio.to_thread(stop_mosquitto, proc)
            await m.wait_until(lambda: m.get("ingest.broker_disconnects") == 1, WAIT_S)
            proc, _ = await asyncio.to_thread(start_mosquitto, tmp_path, port)
            await m.wait_until(lambda: m.get("ingest.subscriptions") == 2, WAIT_S)
            assert m.states["broker_connected"] == 1
            await published_and_stored(gw, port)
    try:
        asyncio.run(main())
    finally:
        stop_mosquitto(proc)


def test_the_nodes_of_a_cluster_are_tried_in_turn(tmp_path: Path) -> None:
    """--broker with several nodes: a dead first node is passed over at the start, and a
    node that goes away is left for the next (two mosquittos play the nodes)."""
    make_registry(tmp_path / "gw")
    dead = free_port()
    (one, port1), (two, port2) = start_mosquitto(tmp_path / "n1"), start_mosquitto(tmp_path / "n2")

    async def main() -> None:
        cfg = GatewayConfig(data_dir=tmp_path / "gw", platform_url="http://127.0.0.1:9", gateway_id="gw-test",
                            broker="mqtt://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d" % (dead, port1, port2))
        async with Gateway(cfg) as gw:
            m = gw.metrics
            assert m.get("ingest.subscriptions") == 1
            await asyncio.to_thread(stop_mosquitto, one)
            await m.wait_until(lambda: m.get("ingest.subscriptions") == 2, WAIT_S)
            await published_and_stored(gw, port2)
    try:
        asyncio.run(main())
    finally:
        stop_mosquitto(one)
        stop_mosquitto(two)


def test_embedded_broker_delivers_to_the_store(tmp_path: Path) -> None:
    async def body(gw: Gateway, pub: Publisher) -> None:
        await asyncio.to_thread(pub.publish_many, [
            ("dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "telemetry.elevator", i)) for i in range(20)])
        await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE, b"junk")
        m = gw.metrics
        await m.wait_until(lambda: m.get("ingest.stored") == 20 and bool(m.rejected()), WAIT_S)
        assert m.rejected() == {"malformed": 1}
    run_with_gateway(tmp_path, "embedded", body)


def test_status_page_shows_the_counters(tmp_path: Path, mosquitto: Any) -> None:
    import aiohttp

    async def body(gw: Gateway, pub: Publisher) -> None:
        await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE, b"junk")
        await gw.metrics.wait_until(lambda: bool(gw.metrics.rejected()), WAIT_S)
        assert gw.status_url is not None
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.status_url + "/api/status") as r:
                status = await r.json()
            async with http.get(gw.status_url + "/metrics") as r:
                text = await r.text()
        assert status["counters"]["ingest.rejected.malformed"] == 1
        assert status["states"]["broker_connected"] == 1
        assert status["store"] == {"stored": 0, "uploaded": 0, "rejected": 0, "pending": 0, "dropped": 0}
        assert status["streams"] == {"alarms": {"pending": 0, "dropped": 0},
                                     "telemetry": {"pending": 0, "dropped": 0}}
        assert 'edge_gateway_ingest_rejected_total{reason="malformed"} 1\n' in text
        assert 'edge_gateway_stream_dropped_events{stream="telemetry"} 0\n' in text
    run_with_gateway(tmp_path, mosquitto.url, body, status_listen="127.0.0.1:0")


def test_share_group_splits_devices_between_gateways(tmp_path: Path, mosquitto: Any) -> None:
    """Two instances in one $share group: every event is stored by exactly one of them."""
    for name in ("a", "b"):
        make_registry(tmp_path / name)

    async def main() -> None:
        cfgs = [GatewayConfig(data_dir=tmp_path / name, platform_url="http://127.0.0.1:9",
                              broker=mosquitto.url, gateway_id="gw-" + name, share_group="site")
                for name in ("a", "b")]
        async with Gateway(cfgs[0]) as a, Gateway(cfgs[1]) as b:
            pub = await asyncio.to_thread(Publisher, mosquitto.host, mosquitto.port)
            await asyncio.to_thread(pub.publish_many, [
                ("dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "telemetry.elevator", i)) for i in range(40)])
            await asyncio.to_thread(pub.close)

            def total() -> int:
                return a.metrics.get("ingest.stored") + b.metrics.get("ingest.stored")
            # whichever instance stores the last event sees the total reach 40
            waits = [asyncio.ensure_future(gw.metrics.wait_until(lambda: total() == 40, WAIT_S))
                     for gw in (a, b)]
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in pending:
                w.cancel()
            for w in done:
                w.result()
            seqs = [r.seq for r in await stored(a)] + [r.seq for r in await stored(b)]
            assert sorted(seqs) == list(range(40))
            assert a.metrics.get("ingest.stored") and b.metrics.get("ingest.stored")
    asyncio.run(main())


class AckListener:
    """A device's view of dev/<id>/cmd/ack: every acknowledgement, decoded with its key."""

    def __init__(self, host: str, port: int, device: str, secret: str) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from edge import ack
        from edge.event import Signer
        self.ranges: list[tuple[int, int, int]] = []
        self.refused = 0
        signer = Signer(bytes.fromhex(secret), device)
        ready = threading.Event()

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            got = ack.decode(signer, msg.payload)
            if got is None:
                self.refused += 1
            else:
                self.ranges += got
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ack-%s-%s" % (device, secret[:4]))
        self.client.on_message = on_message
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe(ack.topic(device), 0)
        self.client.connect(host, port, 30)
        self.client.loop_start()
        assert ready.wait(WAIT_S), "no SUBACK for the ack topic"

    def acked(self) -> set[tuple[int, int]]:
        return {(b, s) for b, first, n in self.ranges for s in range(first, first + n)}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_the_gateway_acknowledges_what_it_stored_to_each_device_signed_with_its_key(
        tmp_path: Path, mosquitto: Any) -> None:
    async def body(gw: Gateway, pub: Publisher) -> None:
        assert gw.broker_address is not None
        mine = await asyncio.to_thread(AckListener, gw.broker_address.host, gw.broker_address.port,
                                       DEVICE, SECRET)
        forged = await asyncio.to_thread(AckListener, gw.broker_address.host, gw.broker_address.port,
                                         DEVICE, OTHER_SECRET)
        try:
            msgs = [("dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "telemetry.elevator", i)) for i in range(1, 6)]
            msgs.append(("dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "telemetry.elevator", 3)))   # a resend
            msgs.append(("dev/%s/ev" % DEVICE, signed_event(DEVICE, OTHER_SECRET, "telemetry.elevator", 9)))  # forged
            await asyncio.to_thread(pub.publish_many, msgs)
            m = gw.metrics
            await m.wait_until(lambda: m.get("ingest.received") >= 7, WAIT_S)
            deadline = asyncio.get_running_loop().time() + WAIT_S
            while mine.acked() != {(1, s) for s in range(1, 6)}:
                assert asyncio.get_running_loop().time() < deadline, mine.ranges
                await asyncio.sleep(0.05)
            # the resend was acknowledged again; the forged event never; nobody else can
            # read an acknowledgement as genuine
            assert sum(1 for b, first, n in mine.ranges for s in range(first, first + n) if s == 3) >= 1
            assert (1, 9) not in mine.acked() and mine.refused == 0
            assert forged.refused >= 1 and forged.ranges == []
        finally:
            mine.close()
            forged.close()
    run_with_gateway(tmp_path, mosquitto.url, body)


def test_ranges_of_groups_consecutive_events_per_boot() -> None:
    from gateway.ingest import ranges_of
    assert ranges_of([(1, 5), (1, 3), (1, 4), (2, 1), (1, 9), (1, 4)]) == [(1, 3, 3), (1, 9, 1), (2, 1, 1)]
