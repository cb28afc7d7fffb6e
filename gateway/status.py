# The gateway's small status page (optional, --status-listen): its counters as JSON at
# / and in the Prometheus text format at /metrics, for a technician or a scraper.
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from gateway.http import Handler
from gateway.metrics import Metrics


def status_routes(metrics: Metrics,
                  store_counts: Callable[[], Awaitable[dict[str, int]]],
                  stream_counts: Callable[[], Awaitable[dict[str, dict[str, int]]]]) -> dict[str, Handler]:
    """The pages, for gateway.http.HttpServer."""
    async def status() -> tuple[str, bytes]:
        body: dict[str, Any] = metrics.snapshot()
        body["store"] = await store_counts()
        body["streams"] = await stream_counts()
        return "application/json", json.dumps(body).encode()

    async def prometheus() -> tuple[str, bytes]:
        text = metrics.prometheus()
        for name, value in sorted((await store_counts()).items()):
            metric = "edge_gateway_store_" + name
            text += "# TYPE %s gauge\n%s %d\n" % (metric, metric, value)
        streams = await stream_counts()
        for name in ("pending", "dropped"):
            metric = "edge_gateway_stream_" + name
            text += "# TYPE %s gauge\n" % metric
            text += "".join('%s{stream="%s"} %d\n' % (metric, stream, counts[name])
                            for stream, counts in sorted(streams.items()))
        return "text/plain; charset=utf-8", text.encode()

    return {"/": status, "/metrics": prometheus}
