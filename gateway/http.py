# HTTP/1.1, the little the gateway speaks: the uplink's POSTs to the platform (a client
# over keep-alive connections, http:// or https://) and the status page (a server that
# answers GET). The reference platform receiver (platform.py) is a separate process and
# uses aiohttp.
#
# Why not aiohttp here too: importing it costs the gateway process about 12 MB (it runs
# in 30 MB without it, docs/gateway.md "Cost") to send one kind of request to one server.
# The head is parsed from bytes (parse_head, body_framing: no socket), the connections
# are asyncio streams, and every wait has a deadline.
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path
from typing import Awaitable, Callable, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from gateway.broker import is_loopback   # what counts as this machine, for MQTT and HTTP alike

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024              # bytes of status line and headers
MAX_BODY = 16 * 1024 * 1024
IDLE_S = 15.0                     # a kept-alive connection unused this long is closed, not reused
SERVER_IDLE_S = 60.0              # the server closes a connection that sends nothing for this long
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error", 503: "Service Unavailable"}
NO_BODY = (204, 304)              # and 1xx: answers that never carry a body


class HttpError(Exception):
    """No usable answer: the peer closed, or broke the protocol. The message says how."""


class Head(NamedTuple):
    start: str                    # "HTTP/1.1 200 OK" or "GET /metrics HTTP/1.1"
    headers: dict[str, str]       # names in lower case


def parse_head(data: bytes) -> Head:
    """A request's or response's head, up to and without its blank line. Raises HttpError."""
    lines = data.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError("malformed header line %r" % line[:80])
        headers[name.lower()] = value.strip()
    return Head(lines[0], headers)


def parse_status(head: Head) -> int:
    """The status code of a response head. Raises HttpError."""
    version, _, rest = head.start.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise HttpError("not an HTTP/1.x response: %r" % head.start[:80])
    return int(code)


def body_framing(headers: dict[str, str]) -> int | None:
    """How the body after this head ends: its length, or None when it is chunked.
    Raises HttpError."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY:
        raise HttpError("bad Content-Length %r" % length[:20])
    return int(length)


def keeps_alive(head: Head) -> bool:
    """Whether the connection may carry another exchange after this one."""
    connection = head.headers.get("connection", "").lower()
    if head.start.startswith("HTTP/1.0") or head.start.endswith("HTTP/1.0"):
        return connection == "keep-alive"
    return connection != "close"


async def _read_head(reader: asyncio.StreamReader) -> Head:
    try:
        data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise HttpError("the connection closed before a complete head" if e.partial
                        else "the connection closed") from None
    except asyncio.LimitOverrunError:
        raise HttpError("a head longer than %d bytes" % MAX_HEAD) from None
    return parse_head(data[:-4])


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    length = body_framing(headers)
    try:
        if length is not None:
            return await reader.readexactly(length)
        chunks = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)   # ValueError: not hex
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass                                  # trailer lines
                return b"".join(chunks)
            if size > MAX_BODY:
                raise HttpError("a chunk of %d bytes" % size)
            chunks.append((await reader.readexactly(size + 2))[:-2])   # and its CRLF
    except asyncio.IncompleteReadError:
        raise HttpError("the connection closed in the middle of a body") from None
    except (asyncio.LimitOverrunError, ValueError):
        raise HttpError("malformed chunked body") from None


def parse_url(url: str) -> tuple[str, str, int, str]:
    """http[s]://host[:port][/path] -> (scheme, host, port, path without a trailing /).
    Raises ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("%r: expected http://host[:port][/path] or https://..." % url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("%r: the port is not a number" % url) from None
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def check_transport(url: str, insecure_plain_http: bool = False) -> None:
    """Plain http:// only to this machine, unless the caller says it accepts the risk:
    anyone in the path could read the events and answer for the platform (a 400 would
    mark events rejected for good, a 200 uploaded though never stored). Raises ValueError."""
    scheme, host, _, _ = parse_url(url)
    if scheme == "http" and not is_loopback(host) and not insecure_plain_http:
        raise ValueError("%r: plain HTTP to another host lets anyone in the path read the events and answer"
                         " for the platform; use https:// (with --platform-ca FILE for a private CA), or"
                         " --insecure-plain-http to accept that" % url)


def client_tls(ca_file: str | None = None) -> ssl.SSLContext:
    """Certificate and host name checked, against ca_file (PEM) or the system's CAs.
    Raises OSError or ssl.SSLError for a CA file that cannot be read."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def server_tls(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server's TLS (the platform receiver's, the status page's): its certificate chain
    and key (PEM files), TLS 1.2 or later. Raises OSError or ssl.SSLError."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class _Connection(NamedTuple):
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float


class HttpClient:
    """Requests to one server (base_url: http[s]://host[:port][/path]) over kept-alive
    connections, one request per connection at a time. A connection that failed, timed
    out or was told to close is closed, never reused. https:// checks the server's
    certificate against ca_file, or the system's CAs."""

    def __init__(self, base_url: str, timeout: float, headers: dict[str, str] | None = None,
                 ca_file: str | None = None) -> None:
        scheme, self.host, self.port, self.prefix = parse_url(base_url)
        host = "[%s]" % self.host if ":" in self.host else self.host    # an IPv6 address
        self.host_header = host if self.port == (443 if scheme == "https" else 80) else "%s:%d" % (host, self.port)
        self.ssl = client_tls(ca_file) if scheme == "https" else None
        self.timeout = timeout
        self.headers = headers or {}
        self._idle: list[_Connection] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(status, response body). Raises HttpError or OSError, or asyncio.TimeoutError
        when the answer is not complete within `timeout` seconds."""
        return await asyncio.wait_for(self._request("POST", path, body, headers), self.timeout)

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """As post(), for a GET (path with its query)."""
        return await asyncio.wait_for(self._request("GET", path, b"", headers), self.timeout)

    async def _request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = ["%s %s%s HTTP/1.1" % (method, self.prefix, path), "Host: " + self.host_header,
                "Content-Length: %d" % len(body)]
        head += ["%s: %s" % kv for kv in self.headers.items()]
        head += ["%s: %s" % kv for kv in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        while True:
            conn, reused = self._take()
            if conn is None:
                reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl,
                                                               limit=MAX_HEAD)
                conn = _Connection(reader, writer, 0.0)
            try:
                conn.writer.write(request)
                await conn.writer.drain()
                status, answer, keep = await self._answer(conn.reader)
            except (HttpError, OSError) as e:
                conn.writer.close()
                if reused:
                    # the server may close a kept-alive connection just as it is reused:
                    # try a new one (the request may then arrive twice: the uplink's are
                    # idempotent, the platform stores by event id)
                    log.debug("a kept-alive connection failed (%s); trying a new one", e)
                    continue
                raise
            except BaseException:
                conn.writer.close()   # cancelled (the timeout) half-way: unusable
                raise
            if keep:
                self._idle.append(_Connection(conn.reader, conn.writer, time.monotonic()))
            else:
                conn.writer.close()
            return status, answer

    def _take(self) -> tuple[_Connection | None, bool]:
        """An idle connection the server has not closed and that is not too old."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.reader.at_eof() or conn.writer.is_closing() or now - conn.idle_since > IDLE_S:
                conn.writer.close()
                continue
            return conn, True
        return None, False

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
        head = await _read_head(reader)
        status = parse_status(head)
        while 100 <= status < 200:                 # 100 Continue and friends: the answer follows
            head = await _read_head(reader)
            status = parse_status(head)
        if status in NO_BODY:
            return status, b"", keeps_alive(head)
        if "content-length" not in head.headers and "transfer-encoding" not in head.headers:
            return status, await reader.read(-1), False   # the body ends when the server closes
        return status, await _read_body(reader, head.headers), keeps_alive(head)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().writer.close()


# ---- the server side: a few GET routes ---------------------------------------------------

class Request(NamedTuple):
    method: str
    path: str                     # without the query
    query: dict[str, str]         # the last value of each name
    headers: dict[str, str]       # names in lower case


class Refused(Exception):
    """A handler's answer that is not a page: status (400, 404) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# a route's handler: request -> (content type, body); raises Refused
Handler = Callable[[Request], Awaitable[tuple[str, bytes]]]
# whether a request may see the pages (a login, gateway/status.py); None: everyone may
Authorize = Callable[[Request], bool]


class HttpServer:
    """Answers GET (and HEAD) on a few paths; 404 for any other path, 405 for any other
    method, 401 (asking for a login) when authorize says no."""

    def __init__(self, routes: dict[str, Handler], authorize: Authorize | None = None,
                 realm: str = "edge-gateway") -> None:
        self.routes = routes
        self.authorize = authorize
        self.realm = realm
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Listen (tls: HTTPS); returns the port (port 0 picks a free one). Raises OSError."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD, ssl=tls)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def request() -> Head:
            head = await _read_head(reader)
            await _read_body(reader, head.headers)               # a GET has none; read it anyway
            return head
        self._writers.add(writer)
        try:
            while True:
                head = await asyncio.wait_for(request(), SERVER_IDLE_S)
                keep = keeps_alive(head)
                writer.write(await self._respond(head, keep))
                await asyncio.wait_for(writer.drain(), SERVER_IDLE_S)
                if not keep:
                    return
        except (HttpError, OSError, asyncio.TimeoutError):
            return                                               # the client went away, or sent nonsense
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _respond(self, head: Head, keep: bool) -> bytes:
        method, _, rest = head.start.partition(" ")
        target = rest.partition(" ")[0]
        path, _, query = target.partition("?")
        req = Request(method, path, dict(parse_qsl(query)), head.headers)
        handler = self.routes.get(path)
        extra = []
        if self.authorize is not None and not self.authorize(req):
            status, ctype, body = 401, "text/plain", b"log in first\n"
            extra.append('WWW-Authenticate: Basic realm="%s", charset="UTF-8"' % self.realm)
        elif handler is None:
            status, ctype, body = 404, "text/plain", b"no such page\n"
        elif method not in ("GET", "HEAD"):
            status, ctype, body = 405, "text/plain", b"GET only\n"
        else:
            try:
                status, (ctype, body) = 200, await handler(req)
            except Refused as e:
                status, ctype, body = e.status, "text/plain; charset=utf-8", (str(e) + "\n").encode()
            except Exception:
                log.exception("status page %s failed", path)
                status, ctype, body = 500, "text/plain", b"internal error, see the gateway's log\n"
        lines = ["HTTP/1.1 %d %s" % (status, REASONS[status]), "Content-Type: " + ctype,
                 "Content-Length: %d" % len(body), "Connection: " + ("keep-alive" if keep else "close"),
                 "Cache-Control: no-store", *extra]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if method == "HEAD" else body)
