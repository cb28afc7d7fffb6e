"""gateway/mqtt.py against a scripted broker on a real loopback socket: packets split
at every byte, MQTT 5 properties, batched PUBACKs, refusals and protocol errors."""
from __future__ import annotations

import asyncio
import struct
from typing import Awaitable, Callable, Iterable

import pytest

from gateway.mqtt import MAX_PACKET, MQTT5, MQTT311, Message, MqttConnection, MqttError, connect

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
WAIT_S = 5.0


def packet(first: int, body: bytes) -> bytes:
    n, out = len(body), bytearray((first,))
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out) + body


def publish(topic: str, payload: bytes, mid: int, version: int, props: bytes = b"") -> bytes:
    body = struct.pack(">H", len(topic)) + topic.encode() + struct.pack(">H", mid)
    if version == MQTT5:
        body += bytes((len(props),)) + props
    return packet(0x32, body + payload)


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    n = shift = 0
    while True:
        b = (await reader.readexactly(1))[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return first, await reader.readexactly(n)


async def trickle(writer: asyncio.StreamWriter, stream: bytes, cuts: Iterable[int]) -> None:
    """Write stream in pieces starting at cuts, one write and one turn of the loop each."""
    starts = list(cuts)
    for a, b in zip(starts, starts[1:] + [len(stream)]):
        writer.write(stream[a:b])
        await writer.drain()
        await asyncio.sleep(0)


async def with_broker(script: Script, client: Callable[[int], Awaitable[None]]) -> None:
    server = await asyncio.start_server(lambda r, w: script(r, w), "127.0.0.1", 0)
    try:
        await asyncio.wait_for(client(server.sockets[0].getsockname()[1]), WAIT_S)
    finally:
        server.close()


@pytest.mark.parametrize("version", [MQTT311, MQTT5])
def test_packets_split_at_every_byte_arrive_whole_and_are_acked_in_order(version: int) -> None:
    got: list[Message] = []
    acks: asyncio.Future[bytes]
    connect_body: asyncio.Future[bytes]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first, body = await read_packet(reader)
        connect_body.set_result(body)
        writer.write(packet(0x20, b"\x01\x00" + (b"\x00" if version == MQTT5 else b"")))
        first, body = await read_packet(reader)
        assert first == 0x82
        writer.write(packet(0x90, body[:2] + (b"\x00" if version == MQTT5 else b"") + b"\x01\x01"))
        stream = b"".join(publish("dev/elev-%d/ev" % i, bytes(range(i * 10)), 100 + i, version,
                                  props=b"\x01\x00" if i == 2 else b"")     # a payload-format property
                          for i in range(1, 4))
        stream += packet(0xD0, b"")                                          # PINGRESP in between
        stream += publish("dev/big/ev", b"x" * 300, 7, version)              # 2-byte remaining length
        await trickle(writer, stream, range(len(stream)))
        acks.set_result(await reader.readexactly(4 * 4))
        writer.close()

    async def client(port: int) -> None:
        conn = await connect("127.0.0.1", port, version, lambda c, msgs: got.extend(msgs))
        assert await conn.handshake("gw-1", "gw-1", None, 30) is True    # session present
        assert await conn.subscribe(["dev/+/ev", "dev/+/status"]) == [1, 1]
        while len(got) < 4:
            await asyncio.sleep(0.01)
        conn.ack([m.mid for m in got])
        assert await acks == b"".join(struct.pack(">BBH", 0x40, 2, m) for m in (101, 102, 103, 7))
        conn.disconnect()

    async def main() -> None:
        nonlocal acks, connect_body
        acks, connect_body = asyncio.Future(), asyncio.Future()
        await with_broker(script, client)
        body = connect_body.result()
        assert body[:6] == b"\x00\x04MQTT" and body[6] == version
        assert body[7] & 0x02 == 0                      # clean start off: a persistent session
        if version == MQTT5:
            assert b"\x21\xff\xff" in body              # Receive Maximum 65535
            assert b"\x27" + struct.pack(">I", MAX_PACKET) in body   # Maximum Packet Size
    asyncio.run(main())
    assert [(m.topic, len(m.payload), m.mid, m.qos) for m in got] == [
        ("dev/elev-1/ev", 10, 101, 1), ("dev/elev-2/ev", 20, 102, 1), ("dev/elev-3/ev", 30, 103, 1),
        ("dev/big/ev", 300, 7, 1)]
    assert got[1].payload == bytes(range(20))


@pytest.mark.parametrize("version", [MQTT311, MQTT5])
def test_an_oversized_publish_is_skipped_unread_and_acked_in_its_turn(version: int) -> None:
    # the broker would send it again after every reconnect: closing the connection over it
    # is what once stopped the gateway for good
    got: list[Message] = []
    acks: asyncio.Future[bytes]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)
        writer.write(packet(0x20, b"\x00\x00" + (b"\x00" if version == MQTT5 else b"")))
        big = publish("dev/x/ev", bytes(MAX_PACKET), 9, version)
        stream = publish("dev/a/ev", b"1", 8, version) + big + publish("dev/b/ev", b"2", 10, version)
        await trickle(writer, stream, [*range(40), *range(40, len(stream), 4096)])   # the header byte by byte
        acks.set_result(await reader.readexactly(3 * 4))
        writer.close()

    async def client(port: int) -> None:
        conn = await connect("127.0.0.1", port, version, lambda c, msgs: got.extend(msgs))
        await conn.handshake("gw-1", "gw-1", None, 30)
        while len(got) < 3:
            await asyncio.sleep(0.01)
        conn.ack([m.mid for m in got])
        assert await acks == b"".join(struct.pack(">BBH", 0x40, 2, m) for m in (8, 9, 10))
        assert conn.is_open
        conn.disconnect()

    async def main() -> None:
        nonlocal acks
        acks = asyncio.Future()
        await with_broker(script, client)
    asyncio.run(main())
    size = MAX_PACKET + 2 + 8 + 2 + (1 if version == MQTT5 else 0)
    assert got == [Message("dev/a/ev", b"1", 8, 1), Message("dev/x/ev", b"", 9, 1, size),
                   Message("dev/b/ev", b"2", 10, 1)]


def test_refused_connection_says_why() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)
        writer.write(packet(0x20, b"\x00\x05"))          # 3.1.1: not authorized

    async def client(port: int) -> None:
        conn = await connect("127.0.0.1", port, MQTT311, lambda c, m: None)
        with pytest.raises(MqttError, match="refused the connection: not authorized"):
            await conn.handshake("gw-1", None, None, 30)
    asyncio.run(with_broker(script, client))


def test_garbage_from_the_broker_closes_the_connection_with_a_reason() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)
        writer.write(packet(0x20, b"\x00\x00"))
        writer.write(b"\x30\xff\xff\xff\xff\x7f")        # a remaining length past 4 bytes
        await asyncio.sleep(1)

    async def client(port: int) -> None:
        conn: MqttConnection = await connect("127.0.0.1", port, MQTT311, lambda c, m: None)
        await conn.handshake("gw-1", None, None, 30)
        why = await conn.closed
        assert why.startswith("protocol error from the broker: malformed remaining length"), why
    asyncio.run(with_broker(script, client))


def test_ack_after_the_broker_went_away_is_dropped_not_raised() -> None:
    # the ingest commits a batch, then acks it: if the broker vanished meanwhile, the
    # commit stands and the broker resends the batch to the next connection
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_packet(reader)
        writer.write(packet(0x20, b"\x00\x00"))
        writer.write(publish("dev/a/ev", b"x", 7, MQTT311))
        await writer.drain()
        await asyncio.sleep(1)

    async def client(port: int) -> None:
        got: list[Message] = []
        arrived = asyncio.Event()
        conn: MqttConnection = await connect("127.0.0.1", port, MQTT311,
                                             lambda c, m: (got.extend(m), arrived.set()))
        await conn.handshake("gw-1", None, None, 30)
        await arrived.wait()
        assert conn.transport is not None
        conn.transport.close()          # the link is going down, and the ack comes in between
        conn.ack([7])
        conn.ack([7])
        assert await conn.closed
    asyncio.run(with_broker(script, client))
