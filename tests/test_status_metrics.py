"""gateway/metrics.py and /metrics of gateway/status.py: a real gateway on a real
mosquitto, scraped over HTTP and read with Prometheus' own text parser."""
from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics
from gateway.service import Gateway
from rig import Publisher, signed_event
from test_gateway_ingest import DEVICE, SECRET, WAIT_S, run_with_gateway


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.headers["Content-Type"], r.read().decode()


def test_metrics_follow_prometheus_naming_and_parse(tmp_path: Path, mosquitto: Any) -> None:
    async def body(gw: Gateway, pub: Publisher) -> None:
        events = [signed_event(DEVICE, SECRET, "telemetry.elevator", i, {"floor": i}) for i in range(1, 6)]
        events.append(signed_event(DEVICE, SECRET, "elevator.entrapment", 6, {"floor": 2}, action="raise"))
        await asyncio.to_thread(pub.publish_many, [("dev/%s/ev" % DEVICE, e) for e in events])
        await asyncio.to_thread(pub.publish, "dev/%s/ev" % DEVICE, b"junk")
        await asyncio.to_thread(pub.publish, "dev/%s/status" % DEVICE, b"online", True)
        m = gw.metrics
        # the platform refuses the uploads (the gateway has no credentials for it): a failing uplink
        await m.wait_until(lambda: m.get("ingest.stored") == 6 and m.get("uplink.failures") >= 1
                           and m.get("ingest.status") == 1 and bool(m.rejected()), WAIT_S)
        assert gw.status_url is not None
        ctype, text = await asyncio.to_thread(scrape, gw.status_url + "/metrics")
        assert ctype.startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(text)}

        for f in families.values():
            assert f.name.startswith(("edge_gateway_", "process_")), f.name      # the application prefix
            assert f.documentation, f.name
            for s in f.samples:
                assert "device" not in s.labels and DEVICE not in s.labels.values(), s   # per device: the page
        # counters: the parser strips "_total" from the family name and keeps it on the sample
        counters = {f.name: f for f in families.values() if f.type == "counter"}
        assert all(s.name == f.name + "_total" for f in counters.values() for s in f.samples)
        value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
        assert value[("edge_gateway_ingest_stored_total", ())] == 6
        assert value[("edge_gateway_ingest_rejected_total", (("reason", "malformed"),))] == 1
        assert value[("edge_gateway_uplink_failures_total", ())] >= 1
        assert value[("edge_gateway_platform_ok", ())] == 0
        assert value[("edge_gateway_devices", (("status", "online"),))] == 1
        assert value[("edge_gateway_alarms_active", ())] == 1
        assert value[("edge_gateway_stream_pending_events", (("stream", "telemetry"),))] == 5
        assert value[("edge_gateway_stream_pending_events", (("stream", "alarms"),))] == 1
        assert value[("edge_gateway_broker_connected", ())] == 1
        assert value[("process_resident_memory_bytes", ())] > 10e6                # base units: bytes
    run_with_gateway(tmp_path, mosquitto.url, body, status_listen="127.0.0.1:0")


def test_label_values_are_escaped_and_every_family_is_typed() -> None:
    m = Metrics()
    m.inc("ingest.rejected.bad\"topic\\")
    m.inc("uplink.events", 3)
    m.set_state("store_used_bytes", 4096)
    families = list(text_string_to_metric_families(m.prometheus()))
    assert {(f.name, f.type) for f in families} == {("edge_gateway_ingest_rejected", "counter"),
                                                    ("edge_gateway_uplink_events", "counter"),
                                                    ("edge_gateway_store_used_bytes", "gauge")}
    rejected = next(f for f in families if f.name == "edge_gateway_ingest_rejected")
    assert rejected.samples[0].labels == {"reason": 'bad"topic\\'}
