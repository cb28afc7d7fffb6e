"""gateway/http.py: the head parsed from plain bytes; the client against a scripted
server (kept-alive connections, chunked bodies, a server that closes, a timeout); the
status page's server answered by a client that speaks plain sockets."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import pytest

from gateway.http import (HttpClient, HttpError, HttpServer, Request, body_framing, keeps_alive, parse_head,
                          parse_status, parse_url)

WAIT_S = 5.0


def test_a_head_from_bytes() -> None:
    head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12")
    assert head.start == "HTTP/1.1 200 OK"
    assert head.headers == {"content-type": "application/json", "content-length": "12"}
    assert parse_status(head) == 200 and body_framing(head.headers) == 12 and keeps_alive(head)
    chunked = parse_head(b"HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\nConnection: close")
    assert parse_status(chunked) == 502 and body_framing(chunked.headers) is None
    assert not keeps_alive(chunked)
    assert not keeps_alive(parse_head(b"HTTP/1.0 200 OK"))
    assert keeps_alive(parse_head(b"GET / HTTP/1.1\r\nHost: x"))
    with pytest.raises(HttpError, match="not an HTTP/1.x response"):
        parse_status(parse_head(b"SSH-2.0-OpenSSH"))
    with pytest.raises(HttpError, match="malformed header line"):
        parse_head(b"HTTP/1.1 200 OK\r\nno colon here")
    with pytest.raises(HttpError, match="bad Content-Length"):
        body_framing({"content-length": "-1"})


def test_a_url_names_what_is_wrong() -> None:
    assert parse_url("https://platform.example/api/") == ("https", "platform.example", 443, "/api")
    assert parse_url("http://127.0.0.1:8080") == ("http", "127.0.0.1", 8080, "")
    with pytest.raises(ValueError, match="expected http://"):
        parse_url("platform.example")
    with pytest.raises(ValueError, match="the port is not a number"):
        parse_url("http://platform.example:http")


# ---- the client against a server that answers from a script ----------------------------

Answer = Callable[[bytes], bytes]      # request head + body -> the bytes to send back


class Scripted:
    """A server that reads each request (head and Content-Length body) and writes the next
    answer of the script, closing after one that says so or is HTTP/1.0; None closes the
    connection instead of answering. Counts connections."""

    def __init__(self, *answers: bytes | None) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = parse_head(head[:-4]).headers.get("content-length", "0")
                self.requests.append(head + await reader.readexactly(int(length)))
                answer = self.answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer or answer.startswith(b"HTTP/1.0"):
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


def with_server(script: Scripted, body: Callable[[HttpClient], Awaitable[None]], timeout: float = WAIT_S) -> None:
    async def main() -> None:
        server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient("http://127.0.0.1:%d/api" % port, timeout, {"User-Agent": "test"})
        try:
            await body(client)
        finally:
            client.close()
            server.close()
    asyncio.run(main())


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


def test_requests_share_a_kept_alive_connection() -> None:
    script = Scripted(OK, OK)

    async def body(client: HttpClient) -> None:
        assert await client.post("/v1/events", b"[1]", {"Content-Type": "application/json"}) == (200, b'{"ok":true}')
        assert await client.post("/v1/events", b"[2]", {}) == (200, b'{"ok":true}')
    with_server(script, body)
    assert script.connections == 1
    first = script.requests[0]
    assert first.startswith(b"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 3\r\n" in first and b"User-Agent: test\r\n" in first and first.endswith(b"\r\n\r\n[1]")


def test_chunked_close_and_read_to_the_end() -> None:
    chunked = (b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nevent\r\n6;x=y\r\ns[3] b\r\n0\r\nTrailer: t\r\n\r\n")
    closing = b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfail"
    to_the_end = b"HTTP/1.0 201 Created\r\n\r\nno length"
    script = Scripted(chunked, closing, to_the_end, OK)

    async def body(client: HttpClient) -> None:
        assert await client.post("/", b"", {}) == (400, b"events[3] b")
        assert await client.post("/", b"", {}) == (500, b"fail")
        assert await client.post("/", b"", {}) == (201, b"no length")
        assert await client.post("/", b"", {}) == (200, b'{"ok":true}')
    with_server(script, body)
    assert script.connections == 3          # a new one after each answer that closed


def test_a_kept_alive_connection_the_server_closed_is_replaced() -> None:
    script = Scripted(OK, None, OK)         # answers, then closes when the second request comes

    async def body(client: HttpClient) -> None:
        assert (await client.post("/", b"a", {}))[0] == 200
        assert (await client.post("/", b"b", {}))[0] == 200
    with_server(script, body)
    assert script.connections == 2
    assert [r[-1:] for r in script.requests] == [b"a", b"b", b"b"]


def test_no_answer_in_time_is_a_timeout_and_the_connection_is_dropped() -> None:
    script = Scripted(OK[:20], OK)          # half an answer, then silence on that connection

    async def body(client: HttpClient) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await client.post("/", b"", {})
        assert await client.post("/", b"", {}) == (200, b'{"ok":true}')
    with_server(script, body, timeout=0.3)
    assert script.connections == 2


def test_a_server_that_breaks_the_protocol_is_an_error() -> None:
    async def body(client: HttpClient) -> None:
        with pytest.raises(HttpError, match="not an HTTP/1.x response"):
            await client.post("/", b"", {})
    with_server(Scripted(b"SSH-2.0-OpenSSH\r\n\r\n"), body)


# ---- the server side -------------------------------------------------------------------

def test_the_server_answers_its_routes_and_keeps_the_connection() -> None:
    async def counts(req: Request) -> tuple[str, bytes]:
        return "application/json", b'{"stored":1}'

    async def broken(req: Request) -> tuple[str, bytes]:
        raise RuntimeError("boom")

    async def main() -> list[bytes]:
        server = HttpServer({"/": counts, "/broken": broken})
        port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        try:
            for request in (b"GET /?pretty HTTP/1.1\r\nHost: x\r\n\r\n", b"HEAD / HTTP/1.1\r\n\r\n",
                            b"GET /nothing HTTP/1.1\r\n\r\n", b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
                            b"GET /broken HTTP/1.1\r\nConnection: close\r\n\r\n"):
                writer.write(request)
                answers.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S))
            rest = await asyncio.wait_for(reader.read(), WAIT_S)   # until the server closes
        finally:
            writer.close()
            await server.close()
        return answers + [rest]
    got = asyncio.run(main())
    assert got[0].startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n")
    assert got[1].startswith(b"{\"stored\":1}HTTP/1.1 200 OK")             # the GET's body, then HEAD's head
    assert got[2].startswith(b"HTTP/1.1 404 ")                               # HEAD sent no body
    assert got[3].startswith(b"no such page\nHTTP/1.1 405 ")
    assert got[4].startswith(b"GET only\nHTTP/1.1 500 ") and b"Connection: close" in got[4]
    assert got[5] == b"internal error, see the gateway's log\n"
