# Counters of what happened to every message and upload. A failure in the gateway is
# a counted state that the status page and the tests can read, never just a log line.
from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Callable


PREFIX = "edge_gateway"

# Dotted counter names whose last part is a label value, not part of the name:
# "ingest.rejected.bad_mac" is edge_gateway_ingest_rejected_total{reason="bad_mac"}.
LABELS = {
    "ingest.rejected.": ("ingest_rejected", "reason"),
    "uplink.events.": ("uplink_stream_events", "stream"),   # uplink.events (no stream) is the sum
    "quota.dropped.": ("quota_dropped_events", "stream"),
    "platform.refused.": ("platform_refused", "reason"),
    "platform.verified.": ("platform_verified", "result"),
}

STATE_HELP = {
    "broker_connected": "1 while the gateway is connected and subscribed to the MQTT broker.",
    "platform_ok": "1 while the last upload to the platform worked, 0 while it fails.",
    "store_failing": "1 while commits to the event store fail (nothing is acknowledged meanwhile).",
    "quota_exceeded": "1 while the event store is over its disk quota.",
    "store_used_bytes": "Bytes in use in the event store (pages minus the free list).",
}


def _metric_name(dotted: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", dotted)


def _split(name: str) -> tuple[str, str]:
    """A dotted counter name -> (metric base name, its labels as exposition text)."""
    for prefix, (base, label) in LABELS.items():
        if name.startswith(prefix):
            return base, '%s="%s"' % (label, escape_label(name[len(prefix):]))
    return _metric_name(name), ""


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def family(metric: str, kind: str, help_text: str, rows: list[tuple[str, int | float]]) -> str:
    """One metric family: its HELP and TYPE lines, then a sample per label set."""
    out = "# HELP %s %s\n# TYPE %s %s\n" % (metric, help_text, metric, kind)
    return out + "".join("%s%s %s\n" % (metric, "{%s}" % labels if labels else "", _number(v))
                         for labels, v in sorted(rows))


def _number(v: int | float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


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

    def prometheus(self, prefix: str = PREFIX) -> str:
        """The counters and numeric states in the Prometheus text format (exposition 0.0.4),
        named as Prometheus asks: the application prefix, "_total" on counters, and the
        variable part of a dotted name (a reason, a stream) as a label (LABELS), so that a
        family sums. Never a device id: those are on the status page."""
        families: dict[str, list[tuple[str, int | float]]] = {}
        for name, count in self.counters.items():
            base, labels = _split(name)
            families.setdefault("%s_%s_total" % (prefix, base), []).append((labels, count))
        text = "".join(family(metric, "counter", "Count of %s." % metric[len(prefix) + 1:-6].replace("_", " "), rows)
                       for metric, rows in sorted(families.items()))
        for name, state in sorted(self.states.items()):
            if isinstance(state, (int, float)) and not isinstance(state, bool):
                metric = "%s_%s" % (prefix, _metric_name(name))
                text += family(metric, "gauge", STATE_HELP.get(name, name.replace("_", " ")), [("", state)])
        return text
