"""A loopback TCP front for a broker cluster: one address for the clients, each new
connection passed to the next node that accepts it (round robin), and closed when that
node goes away, so the client's reconnect lands on a live one. It plays what a site
puts in front of a cluster (a load balancer or a virtual IP, docs/broker-cluster.md)
for the agents, which take one broker address (the gateway takes the nodes' list).

    with Front([port1, port2, port3]) as front:    # front.port goes to the clients
        front.served                                # connections per node, by index
"""
from __future__ import annotations

import asyncio
import threading
from collections import Counter

from tools.common.procs import free_port


class Front:
    def __init__(self, ports: list[int], host: str = "127.0.0.1") -> None:
        self.ports = ports
        self.host = host
        self.port = free_port(host)
        self.served: Counter[int] = Counter()
        self._turn = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._turn += 1
        for k in range(len(self.ports)):
            index = (self._turn + k) % len(self.ports)
            try:
                node_r, node_w = await asyncio.open_connection(self.host, self.ports[index])
                break
            except OSError:
                continue     # that node is down: the next one
        else:
            client_w.close()
            return
        self.served[index] += 1
        self._open |= {client_w, node_w}
        # either side ending ends both: the client sees its broker go and reconnects
        pipes = [asyncio.ensure_future(_pipe(client_r, node_w)), asyncio.ensure_future(_pipe(node_r, client_w))]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass     # the front is stopping
        for task in pipes:
            task.cancel()
        for w in (client_w, node_w):
            w.close()
            self._open.discard(w)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._handle, self.host, self.port)
        self._ready.set()
        await self._stopping.wait()
        server.close()
        for w in self._open:     # the clients see their broker go
            w.close()

    def start(self) -> "Front":
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True, name="front")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the cluster front did not start on port %d" % self.port)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> "Front":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
