"""A simulated site on one machine, all real parts: for each device a socat pty pair, a
pymodbus slave playing a trace, and our agent under the MicroPython unix port (or
CPython); a broker; the gateway; the reference platform receiver. The demo and the
end-to-end tests both drive this.

Every process is started here and stopped here, by its PID.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from edge.mapcheck import profile_map
from tools.common.devconfig import board_map
from tools.testbench.mp_replay import parse_iso
from tools.common import runtime
from tools.testbench.faultproxy import FaultProxy
from tools.testbench.pki import Authority, Pair, make_ca
from edge.ids import GATEWAY_USER
from tools.common.credentials import der_certificate, device_password, write_private
from tools.common.mosquitto import Mosquitto, ServerTls
from tools.common.procs import free_port, stop
from tools.testbench.cluster import NatsCluster
from tools.testbench.front import Front
from tools.testbench.services import add_gateway, platform_get, start_gateway, start_platform
from tools.testbench.vbus import VirtualBus


@dataclass
class Device:
    device_id: str
    profile: str
    trace: str                       # a trace file (.jsonl.gz) the simulated slave plays
    speed: float = 1.0               # trace seconds per real second (the agent's clock follows)
    runtime: str = "micropython"     # or "cpython" (pyserial on the pty)
    site: dict = field(default_factory=dict)
    params: dict | None = None
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    faults: str = ""                 # simulator misbehaviour, e.g. "bad_crc=2,exception=2"
    heap: str | None = None          # MicroPython only: run the agent as .mpy with this heap cap, e.g. "96k"
    log_telemetry: bool = False      # a log line per telemetry event too (the chaos test counts them)
    config: dict = field(default_factory=dict)   # more agent config, e.g. {"watchdog_ms": 5000}
    map: str | None = None           # a shipped map the slave(s) serve and the agent reads by (default: the profile's)
    # more of the agent's bus config, e.g. a CJ/T 188 meter's {"protocol": "cjt188", "address": "..."}:
    # the simulator then plays that meter
    bus: dict = field(default_factory=dict)


class Site:
    def __init__(self, workdir: str, devices: list[Device], broker: str = "mosquitto",
                 platform_print: bool = False, quiet: bool = True, fault_proxy: bool = False,
                 broker_persistence: bool = True, tls: bool = False, gateways: int = 1):
        self.workdir = os.path.abspath(workdir)
        # gateways: more than one share the devices' events through a shared subscription
        # (MQTT 5 $share; on the nats cluster a NATS queue group), each with its own store,
        # platform credentials and process name ("gateway", "gateway-2", ...)
        self.gateways = ["gateway"] + ["gateway-%d" % i for i in range(2, gateways + 1)]
        # tls: mosquitto listens with TLS only and the platform serves HTTPS, with
        # certificates from a CA of the site's own (self.ca), which the gateway and the
        # agents check them against
        self.tls = tls
        self.ca: Authority | None = None
        self.broker_password_file: str | None = None   # the gateway's, for a broker with accounts
        self.devices = devices
        # broker: "mosquitto", "embedded", or "nats-cluster": three nats-server nodes
        # (self.cluster), every device and the gateway a user of their own; the devices
        # reach them through one loopback front (self.front) as through a site's load
        # balancer, the gateway with the list of nodes. nats-server has no MQTT shared
        # subscriptions: one gateway comes as an MQTT client (3.1.1), several as NATS
        # clients to the nodes' client ports in a queue group (self.gateway_nats)
        self.broker_kind = broker
        self.gateway_nats = broker == "nats-cluster" and gateways > 1
        self.cluster: NatsCluster | None = None
        self.front: Front | None = None
        self.broker_persistence = broker_persistence
        self.platform_print = platform_print
        self.quiet = quiet
        self.procs: dict[str, subprocess.Popen] = {}
        self.status_urls: dict[str, str] = {}          # each gateway's status page
        self.buses: dict[str, VirtualBus] = {}
        self.mosquitto: Mosquitto | None = None
        self.broker_port = 0
        self.platform_port = free_port()
        self.anchor = 0.0
        # fault_proxy: the gateway reaches the platform through a FaultProxy (self.proxy)
        self.proxy: FaultProxy | None = FaultProxy(self.platform_url) if fault_proxy else None

    # ------------------------------------------------------------------ helpers
    @property
    def platform_url(self) -> str:
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.platform_port)

    def _certificate(self, name: str) -> Pair:
        """A certificate for name on loopback from the site's CA, which is made on first use."""
        folder = os.path.join(self.workdir, "pki")
        self.ca = self.ca or make_ca(folder)
        return self.ca.issue(folder, name)

    def _spawn(self, name: str, argv: list[str], env: dict | None = None, show: bool = False) -> subprocess.Popen:
        log = None if show else open(os.path.join(self.workdir, name + ".log"), "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT if log else None,
                                env=env or dict(os.environ), cwd=self.workdir)
        self.procs[name] = proc
        return proc

    def log_of(self, name: str) -> str:
        path = os.path.join(self.workdir, name + ".log")
        return open(path, errors="replace").read() if os.path.exists(path) else ""

    def _cli(self, module: str) -> list[str]:
        return [sys.executable, "-m", module]

    # ------------------------------------------------------------------ parts
    def start_broker(self) -> None:
        """Start the broker; after stop_broker() it comes back on the same port, with the
        sessions and queued messages it saved (unless broker_persistence is off)."""
        if self.broker_kind == "mosquitto":
            self.mosquitto = Mosquitto(os.path.join(self.workdir, "mosquitto"), port=self.broker_port or None,
                                       persistence=self.broker_persistence, tls=self._broker_tls()).start()
            self.broker_port = self.mosquitto.port
        elif self.broker_kind == "nats-cluster":
            self._start_cluster()
        elif not self.broker_port:
            self.broker_port = free_port()

    def _broker_tls(self) -> ServerTls | None:
        """The broker's TLS files from the site's CA, with tls on; the embedded broker has none."""
        if not self.tls or self.broker_kind == "embedded":
            return None
        pair = self._certificate("broker")
        return ServerTls(self.ca.cert, pair.cert, pair.key)

    def _start_cluster(self) -> None:
        self.broker_password_file = os.path.join(self.workdir, "gateway.password")
        password = secrets.token_hex(16)
        write_private(self.broker_password_file, password + "\n")
        self.cluster = NatsCluster(os.path.join(self.workdir, "nats"), {d.device_id: d.secret for d in self.devices},
                                   password, self._broker_tls()).start()
        self.front = Front(self.cluster.mqtt_ports).start()
        self.broker_port = self.front.port

    def stop_broker(self, crash: bool = False) -> None:
        """Stop mosquitto (crash: SIGKILL, so it saves nothing on the way out)."""
        if self.mosquitto is None:
            raise RuntimeError("stop_broker: only a separate mosquitto can be stopped "
                               "(the embedded broker lives in the gateway)")
        if crash:
            self.mosquitto.kill()
        else:
            self.mosquitto.stop()

    @property
    def _broker_tls_on(self) -> bool:
        return self.tls and self.broker_kind != "embedded"

    @property
    def broker_url(self) -> str:
        """The gateway's --broker: on the cluster, every node's address (it tries them in
        turn), their NATS client ports for gateways in a queue group; the devices go
        through the front."""
        user = GATEWAY_USER + "@" if self.broker_password_file else ""
        ports = [self.broker_port]
        if self.cluster is not None:
            ports = self.cluster.client_ports if self.gateway_nats else self.cluster.mqtt_ports
        scheme = ("tls", "nats") if self.gateway_nats else ("mqtts", "mqtt")
        return "%s://%s%s" % (scheme[0] if self.tls else scheme[1], user, ",".join("127.0.0.1:%d" % p for p in ports))

    def credentials_of(self, gateway: str) -> str:
        """A gateway's platform credentials, where it looks for them."""
        return os.path.join(self.workdir, gateway, "platform-credentials.json")

    @property
    def credentials(self) -> str:
        """The first gateway's platform credentials (the site reads the platform with them)."""
        return self.credentials_of(self.gateways[0])

    def start_platform(self) -> None:
        log = None if self.platform_print else os.path.join(self.workdir, "platform.log")
        db = os.path.join(self.workdir, "platform.sqlite")
        for name in self.gateways:
            if not os.path.exists(self.credentials_of(name)):
                os.makedirs(os.path.join(self.workdir, name), exist_ok=True)
                add_gateway(db, name.replace("gateway", "site-gw"), self.credentials_of(name))
        self.procs["platform"] = start_platform(self.platform_port, db, log, self.platform_print,
                                                self._certificate("platform") if self.tls else None).proc
        if self.proxy is not None:
            self.proxy.start()

    def register_devices(self) -> None:
        for name in self.gateways:
            self._register(os.path.join(self.workdir, name))

    def _register(self, data: str) -> None:
        os.makedirs(data, exist_ok=True)
        for d in self.devices:
            subprocess.run(self._cli("gateway.cli") + ["devices", "add", d.device_id, "--profile", d.profile,
                                                       "--secret", d.secret, "--data", data],
                           check=True, capture_output=True, text=True)

    def start_gateway(self, name: str = "gateway") -> None:
        broker = ("embedded" if self.broker_kind == "embedded" else self.broker_url)
        platform = self.proxy.url if self.proxy is not None else self.platform_url
        extra = ["--listen", "127.0.0.1:%d" % self.broker_port] if self.broker_kind == "embedded" else []
        if self._broker_tls_on:
            extra += ["--broker-ca", self.ca.cert]
        if self.tls:
            extra += ["--platform-ca", self.ca.cert]
        if self.broker_password_file:
            extra += ["--broker-password-file", self.broker_password_file]
        if len(self.gateways) > 1:
            extra += ["--share-group", "site"]
        if self.broker_kind == "nats-cluster" and not self.gateway_nats:
            extra += ["--mqtt-version", "3.1.1"]
        gateway, status_port = start_gateway(os.path.join(self.workdir, name), broker, platform,
                                             os.path.join(self.workdir, name + ".log"), extra)
        self.procs[name] = gateway.proc
        self.status_urls[name] = "http://127.0.0.1:%d" % status_port

    def agent_config(self, d: Device, port: str) -> dict:
        with_header = _trace_header(d.trace)
        origin, _ = parse_iso(with_header["start"])
        site = dict(with_header.get("config") or {})
        site.update(d.site)
        cfg = {
            "device_id": d.device_id, "secret": d.secret, "profile": d.profile,
            "bus": {"port": port, "baud": 9600, "parity": "E", "slave": 1, "timeout_ms": 300, "retries": 1},
            "broker": {"host": "127.0.0.1", "port": self.broker_port, "keepalive": 30,
                       "user": d.device_id, "password": device_password(d.secret)},
            "site": {k: v for k, v in site.items() if k in ("rated_speed", "floors", "resolution", "occupants")},
            "clock": {"anchor": self.anchor, "origin": origin, "speed": d.speed},
        }
        if d.params:
            cfg["params"] = d.params
        if d.log_telemetry:
            cfg["log_telemetry"] = True
        cfg["bus"].update(d.bus)
        if "protocol" in d.bus:
            del cfg["bus"]["slave"], cfg["bus"]["baud"]      # the protocol's own default baud
        else:
            # the map inlined, as edgectl provision does: a board has no map files
            cfg["map"] = board_map(profile_map(d.profile, d.map))
        cfg.update(d.config)
        return cfg

    def start_device(self, d: Device) -> None:
        bus = VirtualBus(os.path.join(self.workdir, "bus-" + d.device_id)).start()
        self.buses[d.device_id] = bus
        self._spawn("sim-" + d.device_id, self._cli("tools.testbench.simulate") + [
            "--profile", d.profile, "--trace", os.path.abspath(d.trace), "--port", bus.b,
            "--speed", str(d.speed), "--anchor", repr(self.anchor), "--faults", d.faults]
            + (["--map", d.map] if d.map else [])
            + (["--protocol", d.bus["protocol"], "--address", d.bus["address"]] if "protocol" in d.bus else []))
        self.start_agent(d)

    def start_agent(self, d: Device) -> None:
        home = os.path.join(self.workdir, "agent-" + d.device_id)
        os.makedirs(home, exist_ok=True)
        cfg_path = os.path.join(home, "config.json")
        cfg = self.agent_config(d, self.buses[d.device_id].a)
        if self._broker_tls_on:
            # as provisioning does it: the CA in DER beside the config
            with open(os.path.join(home, "ca.der"), "wb") as fh:
                fh.write(der_certificate(self.ca.cert))
            cfg["broker"].update(tls=True, ca="ca.der")
        with open(cfg_path, "w") as fh:
            json.dump(cfg, fh)
        # paths relative to the agent's working directory (the site's): a board's are a
        # few characters, and under a heap cap every character of them costs (the state
        # directory's in each outbox file name, MICROPYPATH's in each import)
        rel = os.path.relpath(home, self.workdir)
        argv = runtime.command(d.runtime, "edge.agent", os.path.join(rel, "config.json"), os.path.join(rel, "state"),
                               heap=d.heap)
        env = runtime.micropython_env()
        if d.heap:
            # as on a board: compiled bytecode only, no sources to compile in RAM
            if not os.path.isdir(os.path.join(self.workdir, "mpy")):
                runtime.compile_agent(os.path.join(self.workdir, "mpy"))
            env["MICROPYPATH"] = ".frozen:mpy"
        self._spawn("agent-" + d.device_id, argv, env=env)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send sig to one of our processes ("gateway", "agent-<id>", ...) and reap it."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(15)

    def device(self, device_id: str) -> Device:
        return next(d for d in self.devices if d.device_id == device_id)

    def start(self) -> "Site":
        os.makedirs(self.workdir, exist_ok=True)
        try:
            self.start_broker()
            self.start_platform()
            self.register_devices()
            for name in self.gateways:
                self.start_gateway(name)
            # trace time 0 is "now plus a moment", so every simulator and agent agree on it
            self.anchor = time.time() + 1.0
            for d in self.devices:
                self.start_device(d)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            ours = name.startswith("gateway") or name == "platform"    # they stop cleanly on SIGINT
            stop(self.procs[name], 10, signal.SIGINT if ours else signal.SIGTERM)
        self.procs.clear()
        for bus in self.buses.values():
            bus.stop()
        self.buses.clear()
        if self.mosquitto:
            self.mosquitto.stop()
        for part in (self.front, self.cluster):
            if part is not None:
                part.stop()
        if self.proxy is not None:
            self.proxy.stop()

    def __enter__(self) -> "Site":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ platform queries
    def platform_events(self, **query: str) -> list[dict]:
        qs = "&".join("%s=%s" % kv for kv in query.items())
        return platform_get(self.platform_url, "/v1/events?limit=100000&" + qs, self.credentials,
                            self.ca.cert if self.tls else None)["events"]

    def wait_for(self, predicate, timeout: float, poll: float = 0.5) -> list[dict]:
        """Poll the platform until predicate(events) is true; returns the events."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.platform_events()
            if predicate(events) or time.monotonic() > deadline:
                return events
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError("%s exited with %s:\n%s" % (name, proc.returncode, self.log_of(name)[-3000:]))
            time.sleep(poll)


def _trace_header(path: str) -> dict:
    import gzip
    with gzip.open(path, "rt") as fh:
        return json.loads(fh.readline())
