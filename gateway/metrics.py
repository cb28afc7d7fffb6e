# Counters of what happened to every message and upload. A failure in the gateway is
# a counted state that the status page and the tests can read, never just a log line.
from __future__ import annotations

import asyncio
from collections import Counter
from typing import Callable


class Metrics:
    """Named monotonic counters plus a few current states (gauges).

    Counter names are dotted: "ingest.rejected.bad_mac", "uplink.failures". They are
    touched only from the event loop thread, so no lock is needed. wait_until() lets a
    test or the demo await an effect ("3 events stored") without polling.
    """

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.states: dict[str, str | int | float] = {}
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def inc(self, name: str, n: int = 1) -> None:
        if n:
            self.counters[name] += n
            self._changed()

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)

    def set_state(self, name: str, value: str | int | float) -> None:
        self.states[name] = value
        self._changed()

    def _changed(self) -> None:
        for predicate, fut in self._waiters:
            if not fut.done() and predicate():
                fut.set_result(None)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once predicate() holds; it is re-checked on every counter change.

        Raises TimeoutError after timeout seconds.
        """
        if predicate():
            return
        entry = (predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(entry[1], timeout)
        finally:
            self._waiters.remove(entry)

    def rejected(self) -> dict[str, int]:
        """Rejected ingest messages by reason."""
        prefix = "ingest.rejected."
        return {k[len(prefix):]: v for k, v in self.counters.items() if k.startswith(prefix)}

    def snapshot(self) -> dict[str, object]:
        return {"counters": dict(sorted(self.counters.items())), "states": dict(self.states)}

    def prometheus(self) -> str:
        """The counters in the Prometheus text format (dots become underscores)."""
        lines = []
        for name, count in sorted(self.counters.items()):
            metric = "edge_gateway_" + name.replace(".", "_").replace("-", "_")
            lines.append("# TYPE %s counter\n%s %d" % (metric, metric, count))
        for name, state in sorted(self.states.items()):
            if isinstance(state, (int, float)):
                metric = "edge_gateway_" + name.replace(".", "_")
                lines.append("# TYPE %s gauge\n%s %s" % (metric, metric, state))
        return "\n".join(lines) + "\n"
