# The gateway's small status page (optional, --status-listen): its counters as JSON at
# / and in the Prometheus text format at /metrics, for a technician or a scraper.
from __future__ import annotations

from typing import Any, Awaitable, Callable

from aiohttp import web

from gateway.metrics import Metrics


def create_status_app(metrics: Metrics,
                      store_counts: Callable[[], Awaitable[dict[str, int]]],
                      stream_counts: Callable[[], Awaitable[dict[str, dict[str, int]]]]) -> web.Application:
    async def status(request: web.Request) -> web.Response:
        body: dict[str, Any] = metrics.snapshot()
        body["store"] = await store_counts()
        body["streams"] = await stream_counts()
        return web.json_response(body)

    async def prometheus(request: web.Request) -> web.Response:
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
        return web.Response(text=text, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/", status)
    app.router.add_get("/metrics", prometheus)
    return app
