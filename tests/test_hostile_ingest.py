"""A gateway no message can stop (issue 11): each hostile message is refused, counted,
logged once with its untrusted strings escaped, and acknowledged, so it neither breaks the
broker connection nor comes back after a restart. Real mosquitto, gateway and SQLite."""
from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from edge import codec
from edge.codes import code_of
from edge.mqtt import put_varint
from gateway.broker import BrokerAddress
from gateway.ingest import Ingest
from gateway.metrics import Metrics
from gateway.mqtt import MAX_PACKET, Message
from gateway.platform import PlatformServer
from gateway.registry import Registry
from gateway.service import Gateway, GatewayConfig
from gateway.sqlite import DbThread
from gateway.store import Store
from rig import Publisher, signed_event, start_mosquitto, stop_mosquitto
from tools.common.mosquitto import MAX_PACKET_SIZE as MOSQUITTO_MAX
from test_gateway_ingest import DEVICE, SECRET, WAIT_S, make_registry, stored


@asynccontextmanager
async def gateway(tmp_path: Path, broker: str, **cfg: Any) -> AsyncIterator[tuple[Gateway, Publisher]]:
    """A gateway on tmp_path/gw (the same store and registry every time) and a publisher."""
    async with PlatformServer(tmp_path / "platform.sqlite") as platform:
        config = GatewayConfig(data_dir=tmp_path / "gw", platform_url=platform.url, broker=broker,
                               listen="127.0.0.1:0", gateway_id="gw-test", **cfg)
        async with Gateway(config) as gw:
            assert gw.broker_address is not None
            pub = await asyncio.to_thread(Publisher, gw.broker_address.host, gw.broker_address.port)
            try:
                yield gw, pub
            finally:
                await asyncio.to_thread(pub.close)


def good(seq: int) -> tuple[str, bytes]:
    return "dev/%s/ev" % DEVICE, signed_event(DEVICE, SECRET, "telemetry.elevator", seq, {"floor": 1})


def huge_boot() -> bytes:
    """A validly signed event whose boot is a 10-byte varint (2**70 - 1): what someone who
    read the device's key from its flash can send."""
    out = bytearray((codec.VERSION, code_of("device.boot"), 0))
    put_varint(out, 2**70 - 1)
    put_varint(out, 1)
    out += bytes(4) + b"\x01\x02"               # time 0, field 0 present: version 1
    return bytes(out + codec.Signer(bytes.fromhex(SECRET), DEVICE).mac(bytes(out)))


def run(tmp_path: Path, body: Any) -> None:
    make_registry(tmp_path / "gw")
    asyncio.run(body())


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_an_oversized_publish_is_skipped_without_dropping_the_connection(
        tmp_path: Path, version: str, caplog: pytest.LogCaptureFixture) -> None:
    # a broker without our packet limit (ours: the next test). MQTT 5: the gateway's
    # Maximum Packet Size makes the broker drop it; MQTT 3.1.1: the gateway skips it
    # unread, counts it, and acknowledges it
    broker, port = start_mosquitto(tmp_path, max_packet_size=0)
    try:
        _oversized(tmp_path, "mqtt://127.0.0.1:%d" % port, version, caplog)
    finally:
        stop_mosquitto(broker)


def test_the_broker_we_configure_disconnects_whoever_sends_an_oversized_packet(
        tmp_path: Path, mosquitto: Any) -> None:
    async def body() -> None:
        async with gateway(tmp_path, mosquitto.url) as (gw, pub):
            pub.client.publish("dev/%s/ev" % DEVICE, b"\x02" * (MOSQUITTO_MAX + 1), qos=1)
            for _ in range(int(WAIT_S * 20)):              # mosquitto says so in its log
                if "oversize packet" in broker_log():
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("mosquitto took the oversized packet: " + broker_log()[-500:])
            sender = await asyncio.to_thread(Publisher, gw.broker_address.host, gw.broker_address.port)
            await asyncio.to_thread(sender.publish, *good(1))
            await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") == 1, WAIT_S)
            # it never reached the gateway, which is still connected
            assert gw.metrics.rejected() == {} and gw.metrics.get("ingest.broker_disconnects") == 0
            await asyncio.to_thread(sender.close)

    def broker_log() -> str:
        return open(os.path.join(mosquitto.broker.workdir, "mosquitto.log"), errors="replace").read()
    run(tmp_path, body)


def _oversized(tmp_path: Path, url: str, version: str, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with gateway(tmp_path, url, mqtt_version=version) as (gw, pub):
            await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE, b"\x02" * (MAX_PACKET + 10_000))
            await asyncio.to_thread(pub.publish, *good(1))
            m = gw.metrics
            await m.wait_until(lambda: m.get("ingest.stored") == 1, WAIT_S)
            assert m.get("ingest.broker_disconnects") == 0
            assert m.rejected() == ({"oversized": 1} if version == "3.1.1" else {})
        async with gateway(tmp_path, url, mqtt_version=version) as (gw, pub):
            await asyncio.to_thread(pub.publish, *good(2))
            await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") == 1, WAIT_S)
            assert gw.metrics.rejected() == {}                 # it did not come back
            assert [r.seq for r in await stored(gw)] == [1, 2]
    run(tmp_path, body)
    if version == "3.1.1":
        assert any("device 'elev-001': oversized:" in r.getMessage() and "skipped unread" in r.getMessage()
                   for r in caplog.records)


def test_a_signed_event_with_a_huge_boot_is_refused_and_does_not_come_back(
        tmp_path: Path, mosquitto: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with gateway(tmp_path, mosquitto.url) as (gw, pub):
            for _ in range(3):
                await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE, huge_boot())
            await asyncio.to_thread(pub.publish, *good(1))
            m = gw.metrics
            await m.wait_until(lambda: m.get("ingest.stored") == 1 and m.get("ingest.received") == 4, WAIT_S)
            assert m.rejected() == {"malformed": 3}
        async with gateway(tmp_path, mosquitto.url) as (gw, pub):
            await asyncio.to_thread(pub.publish, *good(2))
            await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") == 1, WAIT_S)
            assert gw.metrics.rejected() == {} and gw.metrics.get("ingest.received") == 1
    run(tmp_path, body)
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 1, lines        # three rejections, one line; none in the second run
    assert "boot 1180591620717411303423 out of range" in lines[0]


def test_untrusted_strings_cannot_forge_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # mosquitto disconnects a client that puts a newline in a topic; another broker may not,
    # so the gateway's sorting step is fed the message directly
    make_registry(tmp_path)
    ingest = Ingest(BrokerAddress("127.0.0.1", 1), "gw", Registry.in_dir(tmp_path),
                    Store.in_dir(tmp_path), DbThread("test"), Metrics())
    forged = "dev/x\nCRITICAL gateway: all devices lost/ev"
    out = ingest._sort([Message(forged, b"\x02", 1, 1), Message(forged, b"\x02", 2, 1), Message(*good(1), 3, 1)])
    assert len(out.events) == 1 and ingest.metrics.rejected() == {"unknown_device": 2}
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.ingest"]
    assert len(lines) == 1 and "device 'x\\nCRITICAL gateway: all devices lost'" in lines[0], lines
    assert "\n" not in lines[0]


def test_an_event_deleted_by_retention_is_refused_as_a_replay(tmp_path: Path, mosquitto: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        async with gateway(tmp_path, mosquitto.url) as (gw, pub):
            await asyncio.to_thread(pub.publish, *good(1))
            await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") == 1, WAIT_S)
            assert gw.store is not None
            rows = await stored(gw)
            await gw.db.call(gw.store.mark_uploaded, rows, 1.0)
            assert await gw.db.call(gw.store.prune_settled, 2.0) == 1   # what retention does
        async with gateway(tmp_path, mosquitto.url) as (gw, pub):
            await asyncio.to_thread(pub.publish, *good(1))            # the old event, captured and sent again
            await asyncio.to_thread(pub.publish, *good(2))
            m = gw.metrics
            await m.wait_until(lambda: m.get("ingest.received") == 2 and m.get("ingest.stored") == 1, WAIT_S)
            assert m.rejected() == {"replay": 1}
            assert [r.seq for r in await stored(gw)] == [2]
    run(tmp_path, body)
    assert any("device 'elev-001': replay:" in r.getMessage() for r in caplog.records)
