"""edgectl bench-scale: a district's devices on one gateway instance, then on two.

A fleet (tools/testbench/loadgen.py) of --devices devices, each its own MQTT connection
and broker account, sends signed telemetry through mosquitto (accounts and ACL as
`edgectl broker` runs it) to gateway instances that share the devices' events through a
shared subscription ($share), each with its own store, all uploading to the reference
platform. With one instance, then with two, side by side in one run, two phases:

  steady      --rate events/s: each instance's CPU per event and RSS at that load
  saturation  --max-rate offered: what comes back acknowledged is the capacity

The telemetry stream's upload rate limit (2,000 events/s by default, which spreads a
backlog's upload after an outage) is off, so that uploads keep pace with ingest and the
gateway's CPU covers the whole path, platform included.

For each phase: events/s acknowledged end to end (committed by a gateway and acked to
the device), the acknowledgement's latency, and per process from /proc: each gateway's
stored events/s, CPU per event, share of a core and RSS; the broker's, the platform's
and the fleet's share of a core, since they all run on the same cores. At the end every
event sent must be on the platform exactly once.

Everything runs on loopback, starts fresh for each number of instances, stops by
itself, and stops only the processes it started.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edge.ids import GATEWAY_USER
from gateway.registry import Registry
from tools.common.credentials import BrokerAuth, start_broker
from tools.testbench import loadgen
from tools.testbench.bench_delivery import ProcUsage, get_json, wait_for, work_dir
from tools.testbench.services import Service, add_gateway, platform_get, start_gateway, start_platform
from tools.common.procs import free_port

SHARE_GROUP = "bench"
SETTLE_S = 60.0


@dataclass
class Instance:
    name: str
    service: Service
    status: str             # its /api/status URL
    usage: ProcUsage

    def stored(self) -> int:
        return int(get_json(self.status)["counters"].get("ingest.stored", 0))


def gateway_instances(work: Path, k: int, broker_url: str, password_file: str, platform_url: str,
                      platform_db: str, fleet: list[tuple[str, str, str]]) -> list[Instance]:
    out = []
    for j in range(k):
        name = "gw%d" % (j + 1)
        data = work / name
        reg = Registry.in_dir(data)
        for device_id, profile, secret in fleet:
            reg.add(device_id, profile, secret, replace=True)
        reg.save()
        creds = add_gateway(platform_db, "scale-%s" % name, str(work / (name + ".credentials.json")))
        extra = ["--gateway-id", "scale-%s" % name, "--broker-password-file", password_file,
                 "--share-group", SHARE_GROUP, "--stream", "telemetry:rate=0"]
        service, status_port = start_gateway(str(data), broker_url, platform_url, str(work / (name + ".log")),
                                             extra, creds)
        out.append(Instance(name, service, "http://127.0.0.1:%d/api/status" % status_port,
                            ProcUsage(service.proc.pid)))
    return out


def share(cpu: float, span: float) -> str:
    return "%.0f %%" % (100 * cpu / span)


async def phase(name: str, fleet: loadgen.Fleet, rate: float, seconds: float, gateways: list[Instance],
                others: dict[str, ProcUsage]) -> None:
    """Offer `rate` events/s for `seconds`; print what came back and what it cost."""
    stats = fleet.stats
    sent0, acked0, lat0 = stats.sent, stats.acked, len(stats.ack_latency)
    stored0 = [g.stored() for g in gateways]
    cpu0 = [g.usage.cpu_s() for g in gateways]
    other0 = {k: u.cpu_s() for k, u in others.items()}
    fleet0, t0 = loadgen.cpu_s(), time.monotonic()
    await fleet.offer(rate, seconds)
    span = time.monotonic() - t0
    fleet_cpu = loadgen.cpu_s() - fleet0
    cpu = [g.usage.cpu_s() - c for g, c in zip(gateways, cpu0)]
    other = {k: u.cpu_s() - other0[k] for k, u in others.items()}
    stored = [g.stored() - s for g, s in zip(gateways, stored0)]
    lat = sorted(stats.ack_latency[lat0:])
    p99 = lat[min(len(lat) - 1, int(0.99 * (len(lat) - 1)))] if lat else 0.0
    print("  %-10s offered %6.0f/s, sent %6.0f/s, acked %6.0f/s (ack after %.0f ms median, %.0f ms p99)"
          % (name, rate, (stats.sent - sent0) / span, (stats.acked - acked0) / span,
             1000 * statistics.median(lat) if lat else 0.0, 1000 * p99))
    for g, c, n in zip(gateways, cpu, stored):
        print("    %s: stored %6.0f/s, %.3f core-ms/event, %s of a core, RSS %.1f MB"
              % (g.name, n / span, 1000 * c / max(n, 1), share(c, span), g.usage.memory_mb()))
    print("    %s; fleet %s" % (", ".join("%s %s" % (k, share(v, span)) for k, v in other.items()),
                                share(fleet_cpu, span)))
    await fleet.settle(SETTLE_S)


def bench(work: Path, k: int, devices: int, rate: float, max_rate: float, seconds: float, window: int) -> None:
    fleet_spec = loadgen.site(devices)
    loadgen.raise_fd_limit(devices)           # before the broker starts: it inherits the limit
    auth = BrokerAuth(str(work / "mosquitto"))
    auth.add_devices([(d, s) for d, _, s in fleet_spec])
    auth.gateway_password()
    password_file = str(Path(auth.dir) / "gateway.password")
    platform_port = free_port()
    platform_db = str(work / "platform.sqlite")
    platform_url = "http://127.0.0.1:%d" % platform_port
    services: list[Service] = []
    broker = start_broker(auth)
    try:
        platform = start_platform(platform_port, platform_db, str(work / "platform.log"))
        services.append(platform)
        broker_url = "mqtt://%s@127.0.0.1:%d" % (GATEWAY_USER, broker.port)    # its account
        gateways = gateway_instances(work, k, broker_url, password_file, platform_url, platform_db, fleet_spec)
        services += [g.service for g in gateways]
        assert broker.proc is not None
        others = {"broker": ProcUsage(broker.proc.pid), "platform": ProcUsage(platform.proc.pid)}

        async def run() -> int:
            fleet = loadgen.Fleet("127.0.0.1", broker.port, fleet_spec, window)
            took = await fleet.connect()
            total = (rate + max_rate) * seconds
            fleet.prepare(math.ceil(total / devices) + window + 1)
            print("%d gateway instance%s: %d devices connected in %.1f s"
                  % (k, "" if k == 1 else "s", devices, took))
            try:
                await phase("steady", fleet, rate, seconds, gateways, others)
                await phase("saturation", fleet, max_rate, seconds, gateways, others)
                left = await fleet.settle(SETTLE_S)
                if left or fleet.stats.refused_acks:
                    raise RuntimeError("%d events never acknowledged, %d acks refused"
                                       % (left, fleet.stats.refused_acks))
                return fleet.stats.sent
            finally:
                fleet.close()
        sent = asyncio.run(run())
        creds = str(work / "gw1.credentials.json")

        def on_platform() -> int:
            return int(platform_get(platform_url, "/v1/counts", creds)["total"])
        wait_for("the platform to hold every event", lambda: on_platform() >= sent, SETTLE_S)
        print("  on the platform: %d events of %d sent (each once: %s)" % (on_platform(), sent,
                                                                           on_platform() == sent))
    finally:
        for s in reversed(services):
            s.stop()
        broker.stop()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=2000,
                   help="devices, each its own connection and broker account (default 2000)")
    p.add_argument("--rate", type=float, default=2000.0, help="steady phase: events/s in all (default 2000)")
    p.add_argument("--max-rate", type=float, default=30000.0,
                   help="saturation phase: events/s offered (default 30000)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    p.add_argument("--window", type=int, default=16,
                   help="events a device keeps unacknowledged before it holds back (default 16)")
    p.add_argument("--instances", type=int, nargs="+", default=[1, 2], metavar="K",
                   help="numbers of gateway instances to run, one after the other (default: 1 2)")
    p.add_argument("--workdir", default=None, help="keep logs and databases here (default: a temp dir, removed)")


def run(args: argparse.Namespace) -> int:
    if args.devices < 1 or args.rate <= 0 or args.max_rate <= 0 or args.seconds <= 0 or args.window < 1:
        print("bench-scale: --devices, --rate, --max-rate, --seconds and --window must be above 0", file=sys.stderr)
        return 2
    with work_dir(args.workdir, "bench-scale", "; mosquitto, the reference platform and this process (the"
                  " fleet) share them with the gateways") as work:
        for k in args.instances:
            sub = work / ("k%d" % k)
            sub.mkdir(exist_ok=True)
            bench(sub, k, args.devices, args.rate, args.max_rate, args.seconds, args.window)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    sys.exit(run(ap.parse_args()))
