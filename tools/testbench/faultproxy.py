"""A loopback HTTP proxy that puts platform outages in front of the real platform
receiver, on command: the chaos test and the delivery benchmark drive it.

    with FaultProxy(platform_url) as proxy:     # proxy.url goes to the gateway
        proxy.mode = "error"   # every request answers 500
        proxy.mode = "hang"    # requests are held; when the hang ends they reach the
                               # platform anyway, long after the gateway gave up on them
        proxy.mode = "pass"

The held requests are the nasty case of a real outage: the platform stores a batch whose
response the gateway never saw, so the gateway sends it again and only the platform's
idempotent ingest keeps it from being stored twice.
"""
from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

import aiohttp
from aiohttp import web

from gateway.platform import read_body

MODES = ("pass", "error", "hang")
# the body is forwarded as it came, compressed or not (auto_decompress off): the
# gateway's signature covers those bytes
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


class FaultProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = 0
        self._mode = "pass"
        self.seen: Counter[str] = Counter()     # requests by what the proxy did with them
        self.delivered: Counter[str] = Counter()  # event ids in batches that reached the platform
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._resume: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return "http://%s:%d" % (self.host, self.port)

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError("proxy mode %r: expected one of %s" % (value, ", ".join(MODES)))
        self._mode = value
        assert self._loop is not None and self._resume is not None
        resume = self._resume
        self._loop.call_soon_threadsafe(resume.clear if value == "hang" else resume.set)

    # ------------------------------------------------------------------ serving
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self._mode == "error":
            self.seen["error"] += 1
            return web.json_response({"error": "injected outage"}, status=500)
        if self._mode == "hang":
            self.seen["held"] += 1
            assert self._resume is not None
            await self._resume.wait()
        self.seen["forwarded"] += 1
        self._count_ids(request, body)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         data=body, headers=headers) as up:
            data = await up.read()
            return web.Response(status=up.status, body=data, content_type=up.content_type)

    def _count_ids(self, request: web.Request, body: bytes) -> None:
        """How often each event id was handed to the platform: more than once means the
        platform's idempotent ingest had to absorb a repeat."""
        if request.method != "POST" or not request.path.endswith("/events"):
            return
        try:
            events = json.loads(read_body(body, request.headers.get("Content-Encoding")))["events"]
            self.delivered.update(e["id"] for e in events if isinstance(e, dict) and "id" in e)
        except (OSError, ValueError, KeyError, TypeError):
            pass                        # not ours to judge: the platform answers bad bodies itself

    async def _main(self) -> None:
        self._resume = asyncio.Event()
        self._resume.set()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._stopped = asyncio.Event()
        self._ready.set()
        await self._stopped.wait()
        self._resume.set()              # let held requests finish before the session closes
        await self._runner.cleanup()
        await self._session.close()

    def start(self) -> "FaultProxy":
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._main())
            self._loop.close()
        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(15)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
