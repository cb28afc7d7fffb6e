"""gateway/nats.py against a scripted NATS server on a real loopback socket: protocol
lines and payloads split at every byte, the server's PING, our PUBs, a message over the
size bound skipped unread, -ERR on CONNECT and on a SUB, a broken line."""
from __future__ import annotations

import asyncio
import json

import pytest

from gateway.mqtt import MAX_PACKET, Message
from gateway.nats import MAX_LINE, NatsConnection, NatsError, connect, subject_of, topic_of
from test_gateway_mqtt import Script, trickle, with_broker

INFO = b'INFO {"server_id":"x","version":"2.9.10","proto":1,"headers":true,"max_payload":1048576,' \
       b'"auth_required":true}\r\n'


async def read_line(reader: asyncio.StreamReader) -> bytes:
    return (await reader.readuntil(b"\r\n"))[:-2]


async def welcome(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cuts: bool = False) -> dict:
    """INFO (cut at every byte if cuts), then CONNECT and its PING answered; the CONNECT's JSON."""
    await trickle(writer, INFO, range(len(INFO)) if cuts else [0])
    line = await read_line(reader)
    assert line.startswith(b"CONNECT ")
    assert await read_line(reader) == b"PING"
    writer.write(b"PONG\r\n")
    return json.loads(line[8:])


async def session(port: int, queue: str | None = "site") -> tuple[NatsConnection, list[Message]]:
    got: list[Message] = []
    conn = await connect("127.0.0.1", port, lambda c, ms: got.extend(ms), queue=queue)
    await conn.handshake("edge-gateway-a", "gateway", "pw", 30)
    return conn, got


def test_lines_and_payloads_split_at_every_byte_arrive_whole() -> None:
    seen: dict[str, object] = {}
    done: asyncio.Future[None]

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connect"] = await welcome(reader, writer, cuts=True)
        seen["subs"] = [await read_line(reader) for _ in range(2)]
        assert await read_line(reader) == b"PING"
        writer.write(b"PONG\r\n")
        stream = (b"MSG dev.elev-1.ev 1 10\r\n" + bytes(range(10)) + b"\r\n"
                  + b"PING\r\n+OK\r\n"
                  + b"MSG dev.wm//7.status 2 _INBOX.r 6\r\nonline\r\n"          # a reply-to; '.' in an id
                  + b"MSG dev.elev-2.ev 1 0\r\n\r\n"                            # empty
                  + b'INFO {"connect_urls":["127.0.0.1:4223"]}\r\n'             # a cluster change
                  + b"MSG dev.elev-1.ev 1 4\r\n\r\n\r\n\r\n")                   # CRLF inside a payload
        await trickle(writer, stream, range(len(stream)))
        seen["pong"] = await read_line(reader)
        seen["pubs"] = await reader.readexactly(len(b"PUB dev.elev-1.cmd.ack 3\r\nabc\r\n"
                                                    b"PUB dev.wm//7.cmd.ack 0\r\n\r\n"))
        done.set_result(None)

    async def client(port: int) -> None:
        nonlocal done
        done = asyncio.get_running_loop().create_future()
        conn, got = await session(port)
        assert await conn.subscribe(["dev/+/ev", "dev/+/status"], 1) == [0, 0]
        while len(got) < 4:
            await asyncio.sleep(0.01)
        conn.ack([1, 2])                     # nothing to acknowledge at QoS 0: a no-op
        conn.publish_many([("dev/elev-1/cmd/ack", b"abc"), ("dev/wm.7/cmd/ack", b"")])
        await done
        assert conn.is_open
        conn.disconnect()
        assert await conn.closed == "disconnected" and not conn.is_open
        assert got == [Message("dev/elev-1/ev", bytes(range(10)), 0, 0), Message("dev/wm.7/status", b"online", 0, 0),
                       Message("dev/elev-2/ev", b"", 0, 0), Message("dev/elev-1/ev", b"\r\n\r\n", 0, 0)]

    asyncio.run(with_broker(script, client))
    assert seen["connect"] == {"verbose": False, "pedantic": False, "name": "edge-gateway-a", "lang": "python",
                               "version": "1", "protocol": 1, "headers": False, "tls_required": False,
                               "user": "gateway", "pass": "pw"}
    assert seen["subs"] == [b"SUB dev.*.ev site 1", b"SUB dev.*.status site 2"]
    assert seen["pong"] == b"PONG"
    assert seen["pubs"] == b"PUB dev.elev-1.cmd.ack 3\r\nabc\r\nPUB dev.wm//7.cmd.ack 0\r\n\r\n"


def test_a_message_over_the_bound_is_skipped_unread_and_the_next_arrives() -> None:
    big = MAX_PACKET + 1

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await welcome(reader, writer)
        stream = (b"MSG dev.elev-1.ev 1 %d\r\n" % big + b"x" * big + b"\r\n"
                  + b"MSG dev.elev-1.ev 1 2\r\nok\r\n")
        await trickle(writer, stream, range(0, len(stream), 4093))    # cuts land anywhere, CRLF too
        await reader.read()

    async def client(port: int) -> None:
        conn, got = await session(port, queue=None)
        while len(got) < 2:
            await asyncio.sleep(0.01)
        assert got == [Message("dev/elev-1/ev", b"", 0, 0, big), Message("dev/elev-1/ev", b"ok", 0, 0)]
        assert conn.is_open
        conn.abort("done")

    asyncio.run(with_broker(script, client))


def refusing(answer: bytes) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(INFO)
        await read_line(reader)
        await read_line(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()
    return script


@pytest.mark.parametrize("answer", [b"-ERR 'Authorization Violation'\r\n", b"-ERR 'Authori", b""])
def test_a_refused_connect_says_why(answer: bytes) -> None:
    async def client(port: int) -> None:
        with pytest.raises(NatsError) as e:
            await session(port)
        if answer.endswith(b"\r\n"):
            assert str(e.value) == "the broker refused the connection: Authorization Violation"
        else:
            assert "closed by the broker" in str(e.value)

    asyncio.run(with_broker(refusing(answer), client))


def test_a_refused_subscription_is_a_failure_code_and_the_connection_stays() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await welcome(reader, writer)
        for _ in range(3):
            await read_line(reader)
        writer.write(b"-ERR 'Permissions Violation for Subscription to \"dev.*.status\"'\r\nPONG\r\n")
        await reader.read()

    async def client(port: int) -> None:
        conn, _ = await session(port, queue=None)
        assert await conn.subscribe(["dev/+/ev", "dev/+/status"]) == [0, 0x80]
        assert conn.is_open
        conn.abort("done")

    asyncio.run(with_broker(script, client))


def test_a_queue_group_is_one_word() -> None:
    # SUB <subject> <queue> <sid>: a space would make the queue group part of something else
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await welcome(reader, writer)
        await reader.read()

    async def client(port: int) -> None:
        conn, _ = await session(port, queue="site a")
        with pytest.raises(NatsError, match="one word"):
            await conn.subscribe(["dev/+/ev"])
        conn.abort("done")

    asyncio.run(with_broker(script, client))


@pytest.mark.parametrize("bad", [b"MSG dev.x.ev 1\r\n", b"MSG dev.x.ev 1 two\r\n", b"MSG dev.x.ev 1 2\r\nokay\r\n",
                                 b"HELLO\r\n", b"x" * MAX_LINE, b"-ERR 'Stale Connection'\r\n"])
def test_a_broken_or_fatal_line_closes_the_connection_with_its_reason(bad: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await welcome(reader, writer)
        writer.write(bad)
        await reader.read()

    async def client(port: int) -> None:
        conn, got = await session(port)
        why = await conn.closed
        assert ("error from the broker: Stale Connection" if bad.startswith(b"-ERR") else "protocol error") in why
        assert not got

    asyncio.run(with_broker(script, client))


def test_a_server_that_requires_tls_gets_it_or_the_connection_fails() -> None:
    # no TLS server here: what matters is that the client does not go on in clear
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(INFO.replace(b'"auth_required":true', b'"tls_required":true'))
        await reader.read(1)          # the ClientHello's first byte: the client went for TLS
        writer.close()

    async def client(port: int) -> None:
        with pytest.raises((OSError, ConnectionError)):
            await session(port)

    asyncio.run(with_broker(script, client))


def test_topics_and_subjects() -> None:
    # nats-server's MQTT mapping: '/' is '.', a '.' inside a level is '//', wildcards
    assert subject_of("dev/+/ev") == "dev.*.ev" and subject_of("dev/x/cmd/#") == "dev.x.cmd.>"
    assert subject_of("dev/wm.7/cmd/ack") == "dev.wm//7.cmd.ack"
    assert topic_of("dev.wm//7.ev") == "dev/wm.7/ev"
    assert topic_of(subject_of("dev/a.b.c/status")) == "dev/a.b.c/status"
