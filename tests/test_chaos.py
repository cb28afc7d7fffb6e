"""Nothing lost, nothing twice, through every outage at once.

Ten agents under the MicroPython unix port (six elevators, four water meters, each a
pymodbus slave on its own pty), mosquitto with persistence off (it keeps nothing across
a restart: the devices' end-to-end acknowledgements must make up for it), the gateway
and the platform receiver behind a fault proxy. The test kills the gateway with SIGKILL
five times, crashes mosquitto (SIGKILL) three times while events are queued for a
gateway that is down, answers 500 from the platform, hangs it for a minute, stops
mosquitto for 30 s, and pulls the power on agents (SIGKILL) while their outbox holds
events, then restarts them. A second, shorter run does the same to a gateway on its
embedded broker, and a third to two gateways that share the devices on one mosquitto.
At the end every event that every agent generated must be stored at the platform
exactly once.

What an agent generated is read from its own log: it prints one line per event, after
the event is in its flash outbox, and one line per boot. `pytest --chaos-scale 4` makes
every phase four times longer.
"""
from __future__ import annotations

import random
import re
import time
from collections import Counter

from tools.testbench import scenarios
from tools.common import runtime
from tools.testbench.site import Device, Site

BOOT = re.compile(r"^agent (\S+): profile \S+, boot (\d+)")
EVENT = re.compile(r"^event \S+ \S+ seq=(\d+)")
UNSENT = re.compile(r"^agent .*, outbox (\d+) unsent", re.M)


def generated(log: str) -> set[tuple[int, int]]:
    """(boot, seq) of every event an agent's log says it put in its outbox."""
    out: set[tuple[int, int]] = set()
    boot = None
    for line in log.splitlines():
        m = BOOT.match(line)
        if m:
            boot = int(m.group(2))
            continue
        m = EVENT.match(line)
        if m and boot is not None:
            out.add((boot, int(m.group(1))))
    return out


def fleet(tmp_path) -> list[Device]:
    devices = []
    for i in range(6):
        trace = scenarios.write(str(tmp_path / ("elev%d.jsonl.gz" % i)),
                                *scenarios.elevator(seconds=7200, entrapment_at=None, seed=i))
        devices.append(Device("elev-%02d" % i, "elevator", trace, speed=4, heap=runtime.AGENT_HEAP, log_telemetry=True))
    for i in range(4):
        trace = scenarios.write(str(tmp_path / ("wm%d.jsonl.gz" % i)),
                                *scenarios.water_meter(seconds=30 * 86400, flow_from=None, seed=i))
        devices.append(Device("wm-%02d" % i, "water_meter", trace, speed=300, heap=runtime.AGENT_HEAP,
                              log_telemetry=True))
    return devices


class Chaos:
    """The fault script, with a log of what it did and when."""

    def __init__(self, site: Site, scale: float) -> None:
        self.site = site
        self.scale = scale
        self.t0 = time.monotonic()
        self.rnd = random.Random(7)
        self.done: list[str] = []

    def note(self, what: str) -> None:
        line = "%6.1f s  %s" % (time.monotonic() - self.t0, what)
        self.done.append(line)
        print(line, flush=True)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds * self.scale)

    def kill_gateway(self, name: str = "gateway") -> None:
        self.site.kill(name)
        self.note("kill -9 " + name)
        time.sleep(1)
        self.site.start_gateway(name)
        self.note(name + " restarted")

    def crash_broker_under_a_dead_gateway(self) -> None:
        """The gateway dies, events queue up for it in mosquitto, then mosquitto is killed
        (and, persistence off, forgets them) and restarted, then the gateway."""
        self.site.kill("gateway")
        self.note("kill -9 gateway")
        time.sleep(4)
        self.site.stop_broker(crash=True)
        self.note("kill -9 mosquitto with events queued for the gateway")
        time.sleep(1)
        self.site.start_broker()
        self.note("mosquitto back, empty")
        time.sleep(1)
        self.site.start_gateway()
        self.note("gateway restarted")

    def power_cut(self, devices: list[Device], then_restart: bool = True) -> None:
        for d in devices:
            self.site.kill("agent-" + d.device_id)
        self.note("power cut (kill -9) on " + ", ".join(d.device_id for d in devices))
        if then_restart:
            self.power_on(devices)

    def power_on(self, devices: list[Device]) -> None:
        for d in devices:
            self.site.start_agent(d)
        self.note("power back on " + ", ".join(d.device_id for d in devices))


def booted(site: Site, devices: list[Device], scale: float) -> Chaos:
    """Wait until every agent's boot report is at the platform; then the faults may start."""
    site.wait_for(lambda ev: {e["device"] for e in ev if e["type"] == "device.boot"}
                  >= {d.device_id for d in devices}, timeout=90)
    chaos = Chaos(site, scale)
    chaos.note("all %d agents booted and delivering (broker: %s)" % (len(devices), site.broker_kind))
    return chaos


def settle(site: Site, chaos: Chaos, devices: list[Device]) -> tuple[dict, list[dict], Counter]:
    """Wait until everything the agents generated so far is at the platform; returns what
    each generated, the platform's events, and how often the platform saw each id."""
    logs = {d.device_id: site.log_of("agent-" + d.device_id) for d in devices}
    want = {dev: generated(log) for dev, log in logs.items()}
    chaos.note("snapshot: %d events generated" % sum(len(v) for v in want.values()))

    def arrived(events):
        have = {(e["device"], e["boot"], e["seq"]) for e in events}
        return all((dev, b, s) in have for dev, keys in want.items() for b, s in keys)
    events = site.wait_for(arrived, timeout=180)
    chaos.note("platform caught up")
    return want, events, Counter(site.proxy.delivered) if site.proxy is not None else Counter()


def judge(want: dict, events: list[dict], delivered_ids: Counter, chaos: Chaos) -> int:
    """Assert nothing lost, nothing twice; returns the repeated deliveries absorbed."""
    stored = Counter((e["device"], e["boot"], e["seq"]) for e in events)
    wanted = {(dev, b, s) for dev, keys in want.items() for b, s in keys}
    lost = sorted(wanted - set(stored))
    duplicated = sorted(k for k, n in stored.items() if n > 1)
    repeats = sum(n - 1 for n in delivered_ids.values() if n > 1)
    print("\nchaos: generated %d, delivered %d, duplicated %d, lost %d "
          "(%d repeated deliveries absorbed by the platform's idempotent ingest; %d more events after the snapshot)"
          % (len(wanted), len(wanted & set(stored)), len(duplicated), len(lost), repeats,
             len(set(stored) - wanted)))
    print("\n".join(chaos.done))
    assert not lost, "lost events (device, boot, seq): %s" % lost[:20]
    assert not duplicated, "events stored twice: %s" % duplicated[:20]
    return repeats


def test_nothing_lost_nothing_twice(tmp_path, chaos_scale):
    devices = fleet(tmp_path)
    with Site(str(tmp_path / "site"), devices, fault_proxy=True, broker_persistence=False) as site:
        assert site.proxy is not None
        chaos = booted(site, devices, chaos_scale)

        # the gateway dies at random moments; an agent or two lose power meanwhile
        for i in range(5):
            chaos.sleep(chaos.rnd.uniform(3, 7))
            chaos.kill_gateway()
            if i in (1, 3):
                chaos.power_cut([chaos.rnd.choice(devices)])

        # the broker crashes while the gateway is down and events wait for it there
        for _ in range(3):
            chaos.sleep(chaos.rnd.uniform(2, 5))
            chaos.crash_broker_under_a_dead_gateway()

        # the platform fails: 500 for a while, then it hangs for a minute, and while it
        # hangs the broker goes away for 30 s and three agents lose power with a full outbox
        site.proxy.mode = "error"
        chaos.note("platform answers 500")
        chaos.sleep(15)
        site.proxy.mode = "hang"
        chaos.note("platform hangs")
        site.stop_broker()
        chaos.note("mosquitto stopped")
        chaos.sleep(10)
        cut = devices[:2] + devices[-1:]
        chaos.power_cut(cut, then_restart=False)
        chaos.sleep(10)
        chaos.power_on(cut)
        chaos.sleep(10)
        site.start_broker()
        chaos.note("mosquitto back (30 s down)")
        chaos.sleep(30)
        site.proxy.mode = "pass"
        chaos.note("platform back (60 s hang)")
        chaos.sleep(10)

        # what the agents generated up to now must all arrive
        want, events, delivered_ids = settle(site, chaos, devices)
        logs = {d.device_id: site.log_of("agent-" + d.device_id) for d in devices}

    repeats = judge(want, events, delivered_ids, chaos)
    # the faults did happen: the agents cut while the broker was away came back with
    # events still in their flash outbox, and the platform saw repeated deliveries
    for d in cut:
        held = [int(n) for n in UNSENT.findall(logs[d.device_id])[1:]]
        assert held and max(held) > 0, "%s rebooted with an empty outbox: %s" % (d.device_id, held)
    assert repeats > 0


def test_a_gateway_crash_on_the_embedded_broker_loses_nothing(tmp_path, chaos_scale):
    # the embedded broker lives and dies with the gateway: what it held for the gateway
    # is gone with it, and the devices, never acknowledged, send it again
    devices = fleet(tmp_path)[::3]
    with Site(str(tmp_path / "site"), devices, broker="embedded", fault_proxy=True) as site:
        chaos = booted(site, devices, chaos_scale)
        for _ in range(3):
            chaos.sleep(chaos.rnd.uniform(3, 6))
            chaos.kill_gateway()
        chaos.sleep(5)
        want, events, delivered_ids = settle(site, chaos, devices)
    judge(want, events, delivered_ids, chaos)


def test_two_gateways_share_the_devices_through_crashes(tmp_path, chaos_scale):
    # two gateways on one mosquitto (persistence off), each with its own store, splitting
    # the devices' events through a shared subscription: each acknowledges what it
    # committed, one dies while the other goes on, the broker crashes under both
    devices = fleet(tmp_path)[::2]
    with Site(str(tmp_path / "site"), devices, fault_proxy=True, broker_persistence=False, gateways=2) as site:
        chaos = booted(site, devices, chaos_scale)
        for i in range(4):
            chaos.sleep(chaos.rnd.uniform(3, 6))
            chaos.kill_gateway(site.gateways[i % 2])
        chaos.sleep(3)
        site.kill("gateway-2")
        chaos.note("kill -9 gateway-2, and it stays down")
        chaos.sleep(5)
        site.stop_broker(crash=True)
        chaos.note("kill -9 mosquitto")
        site.start_broker()
        chaos.note("mosquitto back, empty")
        chaos.sleep(8)
        site.start_gateway("gateway-2")
        chaos.note("gateway-2 back")
        chaos.sleep(5)
        want, events, delivered_ids = settle(site, chaos, devices)
        stored_by = [site.log_of(name) for name in site.gateways]
    judge(want, events, delivered_ids, chaos)
    # both did share the work
    gateways = Counter(e["gateway"] for e in events)
    assert set(gateways) == {"site-gw", "site-gw-2"}, gateways
    assert all("Traceback" not in log for log in stored_by)
