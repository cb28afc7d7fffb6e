"""edgectl bench-delivery: what the gateway delivers, and how fast, on this machine.

(a) durable ingest: mosquitto holds N signed events for the gateway's persistent
    session (published while the gateway is away); the gateway starts, and we time until
    every event is committed to SQLite (synchronous=FULL). Events/s, median of runs. The
    platform is unreachable meanwhile, so the figure is ingest alone. The same events
    are queued for a do-nothing QoS 1 subscriber (the gateway's MQTT client, acking each
    read at once): what mosquitto delivers to it is the ceiling of this pipeline on this
    machine, and ingest is given as a fraction of it.
(b) alarm latency: the gateway and the platform receiver as processes, telemetry flowing
    at --telemetry-rate events/s from --devices devices, an alarm every --alarm-every s;
    latency from the publish call to the platform's insert of the alarm (its received_at).
    And the gateway's cost in that steady state, from /proc of its process: CPU per
    event (user + system time over the phase, divided by the events sent in it) and RSS.
(c) backlog drain: the platform is down while one hour of a site's events (devices x
    3600 / --period) reaches the gateway; then it comes back. Drain rate of the backlog
    (bounded by the telemetry stream's rate), and the latency of alarms raised meanwhile.

Figures are medians (and p99) because this machine is shared and noisy. Everything runs
on loopback, stops by itself, and stops only the processes it started.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


from gateway.mqtt import MQTT5, Message, MqttConnection, connect
from gateway.registry import Registry
from gateway.service import Gateway, GatewayConfig
from gateway.streams import DEFAULT_STREAMS
from tools.common.mosquitto import Mosquitto
from tools.common.procs import free_port
from tools.testbench.devices import T0, TELEMETRY, Publisher, event_topic, signed_event
from tools.testbench.services import Service, add_gateway, platform_get, start_gateway, start_platform

SECRET = "42" * 32
# tools/common/mosquitto.py already writes what the gateway needs (docs/delivery.md: no cap on
# an offline session's queue, persistence); the benchmark only saves less often, so the
# broker's periodic save does not land inside a measurement.
BROKER_CONF = "autosave_interval 60\n"
WINDOW = 10_000          # QoS 1 publishes in flight per publisher (paho's packet ids wrap at 65535)
WAIT_S = 120.0


# ---- a site: devices, their events ------------------------------------------------------

def devices(n: int) -> list[tuple[str, str]]:
    """Half elevators, half water meters: (device id, profile)."""
    return [("elev-%03d" % i, "elevator") if i % 2 == 0 else ("wm-%03d" % i, "water_meter") for i in range(n)]


ALARM = {"elevator": ("elevator.entrapment", {"floor": 7, "duration_s": 61}),
         "water_meter": ("water.leak", {"duration_s": 3600, "flow": 0.12})}


def event(device: tuple[str, str], seq: int, alarm: bool = False, t: int = T0) -> tuple[str, bytes]:
    name, values = (ALARM if alarm else TELEMETRY)[device[1]]
    payload = signed_event(device[0], SECRET, name, seq, values, "raise" if alarm else "report", t=t)
    return event_topic(device[0]), payload


def register(data: Path, site: list[tuple[str, str]]) -> None:
    reg = Registry.in_dir(data)
    for device_id, profile in site:
        reg.add(device_id, profile, SECRET, replace=True)
    reg.save()


# ---- publishing -------------------------------------------------------------------------

def publisher(port: int, client_id: str) -> Publisher:
    return Publisher("127.0.0.1", port, client_id, inflight=1000, timeout=WAIT_S)


def _publish_part(port: int, part: int, messages: list[tuple[str, bytes]]) -> None:
    pub = publisher(port, "bench-pub-%d-%d" % (os.getpid(), part))
    try:
        pub.publish_many(messages, WINDOW)
    finally:
        pub.close()


def publish_all(port: int, messages: list[tuple[str, bytes]], processes: int = 2) -> float:
    """Publish with QoS 1 from several processes (paho is CPU-bound); returns events/s."""
    t = time.monotonic()
    parts = [messages[i::processes] for i in range(processes)]
    procs = [multiprocessing.get_context("fork").Process(target=_publish_part, args=(port, i, part))
             for i, part in enumerate(parts)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(WAIT_S)
        if p.exitcode != 0:
            raise RuntimeError("a publisher process failed (exit %s)" % p.exitcode)
    return len(messages) / (time.monotonic() - t)


class Paced:
    """A thread publishing make(i) at `rate` per second until stopped; records send times."""

    def __init__(self, port: int, name: str, rate: float, make: Callable[[int], tuple[str, bytes, str]]) -> None:
        self.pub = publisher(port, name)
        self.client = self.pub.client
        self.rate, self.make = rate, make
        self.sent: dict[str, float] = {}
        self._infos: list[Any] = []      # paho's MQTTMessageInfo of each publish
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Paced":
        self._thread.start()
        return self

    def _run(self) -> None:
        # what is due by now, not a whole number per tick: 125/s is 125/s, not 100/s
        tick = 0.01 if self.rate >= 100 else 1.0 / self.rate
        i, start = 0, time.monotonic()
        next_at = start
        while not self._stop.is_set():
            due = math.floor(self.rate * (time.monotonic() - start)) + 1
            while i < due:
                topic, payload, event_id = self.make(i)
                self.sent[event_id] = time.time()
                self._infos.append(self.client.publish(topic, payload, qos=1))
                i += 1
            next_at += tick
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def sent_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in list(self.sent.values()) if t0 <= t < t1)

    def stop(self) -> None:
        """Stop publishing; return once the broker has acknowledged every message sent
        (paho drops what is still queued in it when it disconnects)."""
        self._stop.set()
        self._thread.join(10)
        for info in self._infos:
            info.wait_for_publish(WAIT_S)
        self.pub.close()


# ---- the ceiling: mosquitto to a subscriber that does nothing ---------------------------------

CEILING_ID = "bench-ceiling"


async def do_nothing_subscriber(port: int, n: int = 0) -> float:
    """The gateway's own MQTT client with nothing behind it: a persistent session on the
    devices' event topic, every read acknowledged at once. n = 0: make the session and
    leave (mosquitto then queues for it). Else take n messages; returns messages/s from
    the connect to the n-th."""
    done = asyncio.get_running_loop().create_future()
    got = 0

    def on_messages(conn: MqttConnection, messages: list[Message]) -> None:
        nonlocal got
        conn.ack([m.mid for m in messages if m.qos])
        got += len(messages)
        if n and got >= n and not done.done():
            done.set_result(None)
    t = time.monotonic()
    conn = await connect("127.0.0.1", port, MQTT5, on_messages)
    try:
        await conn.handshake(CEILING_ID, CEILING_ID, None, 30, clean_start=False)
        if not n:
            await conn.subscribe([event_topic("+")], 1)
            return 0.0
        await asyncio.wait_for(done, WAIT_S)
        return n / (time.monotonic() - t)
    finally:
        conn.disconnect()


# ---- the gateway's cost, from /proc of its process ----------------------------------------------

class ProcUsage:
    """CPU time and memory of a child process (Linux /proc)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_s(self) -> float:
        """User + system time so far, in seconds."""
        with open("/proc/%d/stat" % self.pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()   # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime, stime

    def memory_mb(self, key: str = "VmRSS") -> float:
        """VmRSS (resident now) or VmHWM (its peak), in MB."""
        with open("/proc/%d/status" % self.pid) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024 / 1e6
        raise RuntimeError("no %s in /proc/%d/status" % (key, self.pid))


# ---- processes: platform receiver and gateway --------------------------------------------

def platform_at(work: Path, port: int) -> Service:
    return start_platform(port, str(work / "platform.sqlite"), str(work / "platform.log"))


def credentials(work: Path) -> str:
    """The bench gateway's platform credentials, made on first use."""
    path = work / "bench.credentials.json"
    return str(path) if path.exists() else add_gateway(str(work / "platform.sqlite"), "bench", str(path))


def gateway_for(work: Path, broker: Mosquitto, platform_port: int, extra: list[str]) -> tuple[Service, int]:
    return start_gateway(str(work / "gw"), broker.url, "http://127.0.0.1:%d" % platform_port,
                         str(work / "gateway.log"), ["--gateway-id", "bench", *extra], credentials(work))


def platform_json(work: Path, port: int, path: str) -> Any:
    return platform_get("http://127.0.0.1:%d" % port, path, credentials(work))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.1)


def platform_events(work: Path, port: int, type_: str | None = None) -> list[dict[str, Any]]:
    query = "?limit=100000" + ("&type=" + type_ if type_ else "")
    return list(platform_json(work, port, "/v1/events" + query)["events"])


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ms = sorted(v * 1000 for v in values)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return "median %.0f ms, p99 %.0f ms, max %.0f ms (%d alarms)" % (statistics.median(ms), p99, ms[-1], len(ms))


def latencies(sent: dict[str, float], stored: list[dict[str, Any]]) -> list[float]:
    at = {e["id"]: e["received_at"] for e in stored}
    return [at[i] - t for i, t in sent.items() if i in at]


# ---- (a) durable ingest ----------------------------------------------------------------------

def bench_ingest(work: Path, broker: Mosquitto, n: int, n_devices: int, runs: int) -> None:
    site = devices(n_devices)
    messages = [event(site[i % n_devices], i // n_devices) for i in range(n)]
    # the in-process gateway would warn that the (deliberately absent) platform is down
    logging.getLogger("gateway").setLevel(logging.ERROR)
    rates, ceilings = [], []
    asyncio.run(do_nothing_subscriber(broker.port))
    for run in range(runs):
        data = work / ("ingest-%d" % run)
        register(data, site)
        cfg = GatewayConfig(data_dir=data, platform_url="http://127.0.0.1:%d" % free_port(),
                            broker=broker.url, gateway_id="bench-ingest-%d" % run)

        async def first_start() -> None:
            async with Gateway(cfg):      # creates the persistent session, then goes away
                pass
        asyncio.run(first_start())
        pub_rate = publish_all(broker.port, messages)
        # the same events, queued for the do-nothing subscriber too
        ceilings.append(asyncio.run(do_nothing_subscriber(broker.port, n)))

        async def ingest() -> float:
            t = time.monotonic()
            async with Gateway(cfg) as gw:
                await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") >= n, WAIT_S)
                elapsed = time.monotonic() - t
                batches = gw.metrics.get("ingest.commits")
            print("  run %d: %d events committed in %.2f s = %.0f events/s (%d transactions;"
                  " preloaded at %.0f/s; to a do-nothing subscriber %.0f/s)"
                  % (run + 1, n, elapsed, n / elapsed, batches, pub_rate, ceilings[-1]))
            return n / elapsed
        rates.append(asyncio.run(ingest()))
        shutil.rmtree(data, ignore_errors=True)
    rate, ceiling = statistics.median(rates), statistics.median(ceilings)
    print("(a) durable ingest from mosquitto: median %.0f events/s over %d runs of %d events"
          " (min %.0f, max %.0f)" % (rate, runs, n, min(rates), max(rates)))
    print("    ingest {:,.0f}/s = {:.2f}x mosquitto's {:,.0f}/s to a do-nothing QoS 1 subscriber"
          " (medians)".format(rate, rate / ceiling, ceiling))


# ---- (b) alarm latency under background telemetry --------------------------------------------

def bench_latency(work: Path, broker: Mosquitto, n_devices: int, rate: float, seconds: float,
                  alarm_every: float) -> None:
    site = devices(n_devices)
    register(work / "gw", site)
    platform_port = free_port()
    platform = platform_at(work, platform_port)
    gateway, status_port = gateway_for(work, broker, platform_port, [])
    status = "http://127.0.0.1:%d/api/status" % status_port
    seqs = [0] * n_devices

    def tele(i: int) -> tuple[str, bytes, str]:
        d = i % n_devices
        seqs[d] += 1
        topic, payload = event(site[d], seqs[d])
        return topic, payload, "%s:1:%d" % (site[d][0], seqs[d])

    def alarm(i: int) -> tuple[str, bytes, str]:
        d = (i * 7) % n_devices
        seq = 10_000_000 + i                 # apart from the telemetry's numbers
        topic, payload = event(site[d], seq, alarm=True)
        return topic, payload, "%s:1:%d" % (site[d][0], seq)
    try:
        background = Paced(broker.port, "bench-telemetry", rate, tele).start()
        time.sleep(2.0)                      # let the telemetry reach a steady state
        alarms = Paced(broker.port, "bench-alarms", 1.0 / alarm_every, alarm).start()
        usage = ProcUsage(gateway.proc.pid)
        # the counters read outside the measured span: a status page's render is the
        # reader's cost, not the steady state's
        counters0 = get_json(status)["counters"]
        t0, cpu0 = time.time(), usage.cpu_s()
        time.sleep(seconds)
        t1, cpu1 = time.time(), usage.cpu_s()
        counters1 = get_json(status)["counters"]
        rss, peak = usage.memory_mb(), usage.memory_mb("VmHWM")
        alarms.stop()
        background.stop()
        steady = alarms.sent_between(t0, t1) + background.sent_between(t0, t1)
        sent_total = len(alarms.sent) + len(background.sent)
        try:
            wait_for("the platform to store every event",
                     lambda: platform_json(work, platform_port, "/v1/counts")["total"] >= sent_total)
        except RuntimeError as e:
            counters = get_json(status)["counters"]
            raise RuntimeError("%s: %d sent, the gateway received %d and uploaded %d, the platform has %d" % (
                e, sent_total, counters.get("ingest.received", 0), counters.get("uplink.events", 0),
                platform_json(work, platform_port, "/v1/counts")["total"])) from None
        stored = platform_events(work, platform_port)
        alarm_lat = latencies(alarms.sent, stored)
        tele_lat = latencies(background.sent, stored)
        print("(b) alarm latency, publish -> platform insert, with %.0f telemetry events/s from %d devices"
              " for %.0f s: %s" % (rate, n_devices, seconds, percentiles(alarm_lat)))
        print("    telemetry (batched, up to 1 s by design): median %.0f ms; %d events, each stored once: %s"
              % (statistics.median(tele_lat) * 1000, len(tele_lat),
                 len({e["id"] for e in stored}) == len(stored) == sent_total))
        cpu, span = cpu1 - cpu0, t1 - t0

        def per_s(counter: str) -> float:
            return (counters1.get(counter, 0) - counters0.get(counter, 0)) / span
        print("    gateway process over the %.0f s (%d events, %.0f/s): %.3f core-ms/event = %.1f %% of a core;"
              " RSS %.1f MB (peak %.1f MB)" % (span, steady, steady / span, cpu * 1000 / max(steady, 1),
                                                100 * cpu / span, rss, peak))
        print("    its work: %.0f commits/s (%.1f events each), %.0f upload requests/s"
              % (per_s("ingest.commits"), per_s("ingest.stored") / max(per_s("ingest.commits"), 1e-9),
                 per_s("uplink.requests")))
    finally:
        gateway.stop()
        platform.stop()


# ---- (c) backlog drain after a platform outage ------------------------------------------------

def bench_drain(work: Path, broker: Mosquitto, n_devices: int, period: float, alarm_every: float,
                drain_rate: float | None) -> None:
    site = devices(n_devices)
    register(work / "gw", site)
    platform_port = free_port()
    limit = "telemetry stream limit: %s" % (
        "%.0f/s (default)" % DEFAULT_STREAMS[1].rate if drain_rate is None
        else "none" if drain_rate == 0 else "%.0f/s" % drain_rate)
    gateway, status_port = gateway_for(work, broker, platform_port,
                                       [] if drain_rate is None else ["--stream", "telemetry:rate=%g" % drain_rate])
    status = "http://127.0.0.1:%d/api/status" % status_port
    per_device = int(3600 / period)
    # one hour of the site: every device every `period` s, one alarm per device in the hour
    backlog = [event(site[d], k, alarm=(k == per_device // 2), t=T0 + int(k * period))
               for k in range(per_device) for d in range(n_devices)]
    platform = None
    try:
        print("(c) platform down; %d devices x 1 event/%.0f s x 3600 s = %d events reach the gateway ..."
              % (n_devices, period, len(backlog)))
        publish_all(broker.port, backlog)
        wait_for("the gateway to store the backlog",
                 lambda: get_json(status)["counters"].get("ingest.stored", 0) >= len(backlog))

        def alarm(i: int) -> tuple[str, bytes, str]:
            d, seq = (i * 7) % n_devices, 10_000_000 + i
            topic, payload = event(site[d], seq, alarm=True)
            return topic, payload, "%s:1:%d" % (site[d][0], seq)
        seqs = [per_device] * n_devices

        def live(i: int) -> tuple[str, bytes, str]:
            d = i % n_devices
            seqs[d] += 1
            topic, payload = event(site[d], seqs[d])
            return topic, payload, "%s:1:%d" % (site[d][0], seqs[d])
        # the site goes on living while the backlog drains
        background = Paced(broker.port, "bench-live", n_devices / period, live).start()
        alarms = Paced(broker.port, "bench-alarms", 1.0 / alarm_every, alarm).start()
        back_at = time.time()
        platform = platform_at(work, platform_port)
        backlog_ids = {"%s:1:%d" % (site[d][0], k) for k in range(per_device) for d in range(n_devices)}
        wait_for("the backlog to drain", lambda: get_json(status)["store"]["pending"] == 0
                 and platform_json(work, platform_port, "/v1/counts")["total"] >= len(backlog))
        alarms.stop()
        background.stop()
        wait_for("the live events", lambda: platform_json(work, platform_port, "/v1/counts")["total"]
                 >= len(backlog) + len(alarms.sent) + len(background.sent))
        stored = platform_events(work, platform_port)
        times = sorted(e["received_at"] for e in stored if e["id"] in backlog_ids)
        first, last = times[0], times[-1]
        print("    platform back: first backlog event stored after %.1f s (the upload lanes' retry"
              " backoff), the last after %.1f s" % (first - back_at, last - back_at))
        print("    backlog drain: %d events in %.1f s = %.0f events/s (%s)"
              % (len(times), last - first, len(times) / max(last - first, 1e-9), limit))
        during = {i: t for i, t in alarms.sent.items() if first <= t <= last}
        print("    alarms raised during the drain: %s" % percentiles(latencies(during, stored)))
        print("    alarms raised from the platform's return on (their lane may be in retry backoff): %s"
              % percentiles(latencies({i: t for i, t in alarms.sent.items() if t >= back_at}, stored)))
        ids = [e["id"] for e in stored]
        print("    every event stored once: %s" % (len(ids) == len(set(ids))))
    finally:
        if platform is not None:
            platform.stop()
        gateway.stop()


# ---- edgectl plumbing ------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", choices=("ingest", "latency", "drain"), action="append",
                   help="run only these parts (default: all three)")
    p.add_argument("--events", type=int, default=100_000, help="(a) events per ingest run (default 100000)")
    p.add_argument("--runs", type=int, default=3, help="(a) ingest runs, median reported (default 3)")
    p.add_argument("--devices", type=int, default=100, help="devices of the site (default 100)")
    p.add_argument("--telemetry-rate", type=float, default=1000.0,
                   help="(b) background telemetry events/s (default 1000)")
    p.add_argument("--seconds", type=float, default=20.0, help="(b) measuring time (default 20)")
    p.add_argument("--alarm-every", type=float, default=0.2, help="(b, c) seconds between alarms (default 0.2)")
    p.add_argument("--period", type=float, default=10.0,
                   help="(c) seconds between a device's events: the hour's backlog is devices x 3600/period")
    p.add_argument("--drain-rate", type=float, default=None,
                   help="(c) the telemetry stream's rate limit in events/s, 0 for none (default: the gateway's)")
    p.add_argument("--workdir", default=None, help="keep logs and databases here (default: a temp dir, removed)")


@contextmanager
def work_dir(given: str | None, name: str, what: str = "") -> Iterator[Path]:
    """A benchmark's scratch directory: the one given (kept), or a temporary one removed
    at the end; says where it is and on how many cores the figures were made."""
    work = Path(given or tempfile.mkdtemp(prefix=name + "-"))
    work.mkdir(parents=True, exist_ok=True)
    print("%s on %d cores, work in %s%s" % (name, os.cpu_count() or 0, work, what))
    try:
        yield work
    finally:
        if given is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    parts = args.only or ["ingest", "latency", "drain"]
    with work_dir(args.workdir, "bench-delivery") as work:
        for part in parts:
            sub = work / part
            sub.mkdir(exist_ok=True)
            with Mosquitto(str(sub / "mosquitto"), extra=BROKER_CONF) as broker:
                if part == "ingest":
                    bench_ingest(sub, broker, args.events, args.devices, args.runs)
                elif part == "latency":
                    bench_latency(sub, broker, args.devices, args.telemetry_rate, args.seconds, args.alarm_every)
                else:
                    bench_drain(sub, broker, args.devices, args.period, args.alarm_every, args.drain_rate)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    sys.exit(run(ap.parse_args()))
