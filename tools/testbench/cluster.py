"""A three-node nats-server cluster on loopback, with its MQTT listener and JetStream, for
the tests that kill a broker node mid-run (docs/broker-cluster.md says why nats-server).

    with NatsCluster(workdir, {"elev-01": secret}, gateway_password) as cluster:
        cluster.mqtt_ports          # one MQTT port per node
        cluster.client_ports        # one NATS client port per node (gateways in a queue group)
        cluster.kill(1)             # SIGKILL, as a crash or a power cut would
        cluster.start_node(1)       # back on the same ports, with its JetStream state

Each device is a user (its id, the password derived from its secret, as for mosquitto)
allowed what the mosquitto ACL of tools/common/credentials.py allows it, translated to
NATS subjects; so is the gateway, which may come as an MQTT client or as a NATS client
(gateway/nats.py: several gateways in a queue group), with the same user. Sessions and
QoS 1 messages live in JetStream streams replicated to all three nodes. Every process
is started here and stopped here, by its PID.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass

from edge.ids import GATEWAY_USER
from gateway.nats import subject_of
from tools.common.credentials import device_acl, device_password, gateway_acl, write_private
from tools.common.mosquitto import ServerTls
from tools.common.procs import free_port, stop

PACKAGE = "nats-server"      # Debian 12: 2.9.10, in /usr/sbin (not on a user's PATH)
SBIN = "/usr/sbin/nats-server"
NODES = 3
# A QoS 1 subscription is a JetStream consumer that delivers on $MQTT.sub.<id>, which the
# subscriber (the gateway; devices subscribe at QoS 0) must be allowed to read.
QOS1_DELIVERY = "$MQTT.sub.>"
MAX_ACK_PENDING = 20000


def binary() -> str:
    """The nats-server binary, installed with apt-get when it is missing (as `make setup`
    does): a test that needs the cluster fails loudly rather than skip."""
    found = _installed()
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    install = sudo + ["apt-get", "install", "-y", PACKAGE]
    if subprocess.run(install, capture_output=True).returncode:
        subprocess.run(sudo + ["apt-get", "update"], capture_output=True)
        done = subprocess.run(install, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError("cannot install %s with apt-get (run `make setup`): %s"
                               % (PACKAGE, done.stderr.strip()[-1000:]))
    found = _installed()
    if not found:
        raise RuntimeError("apt-get installed %s but there is no nats-server on PATH or in /usr/sbin" % PACKAGE)
    return found


def _installed() -> str | None:
    return shutil.which("nats-server") or (SBIN if os.access(SBIN, os.X_OK) else None)


def permissions(acl: list[str]) -> dict[str, list[str]]:
    """A mosquitto ACL block (credentials.device_acl, gateway_acl) as NATS permissions:
    `topic write` is publish, `topic read` subscribe. One home for who may do what. A
    subject allowed to subscribe is allowed in any queue group too: the gateway's
    `dev.*.ev` covers its queue subscriptions, its `dev.*.cmd.>` its acknowledgements."""
    allowed: dict[str, list[str]] = {"publish": [], "subscribe": []}
    for line in acl:
        words = line.split()
        if words[:1] == ["topic"]:
            allowed["publish" if words[1] == "write" else "subscribe"].append(subject_of(words[2]))
    return allowed


@dataclass
class Node:
    name: str
    client_port: int        # NATS protocol: the gateways in a queue group (gateway/nats.py)
    route_port: int         # cluster routes between the nodes
    mqtt_port: int
    monitor_port: int       # HTTP monitoring: /jsz says when JetStream has a leader
    proc: subprocess.Popen | None = None


class NatsCluster:
    def __init__(self, workdir: str, devices: dict[str, str], gateway_password: str,
                 tls: ServerTls | None = None) -> None:
        """devices: id -> secret (hex); gateway_password: the gateway user's; tls: the MQTT
        listeners speak TLS only, with these files (a certificate for 127.0.0.1)."""
        self.workdir = os.path.abspath(workdir)
        self.tls = tls
        self.devices = devices
        self.gateway_password = gateway_password
        self.nodes = [Node("n%d" % i, *(free_port() for _ in range(4))) for i in range(1, NODES + 1)]

    @property
    def mqtt_ports(self) -> list[int]:
        return [n.mqtt_port for n in self.nodes]

    @property
    def client_ports(self) -> list[int]:
        return [n.client_port for n in self.nodes]

    def _users(self) -> list[dict]:
        gateway = permissions(gateway_acl())
        gateway["subscribe"].append(QOS1_DELIVERY)
        users = [{"user": GATEWAY_USER, "password": self.gateway_password, "permissions": gateway}]
        for device_id, secret in self.devices.items():
            users.append({"user": device_id, "password": device_password(secret),
                          "permissions": permissions(device_acl(device_id))})
        return users

    def _config(self, node: Node) -> str:
        """nats-server reads JSON as its config format; mode 0600: it holds passwords."""
        conf = {
            "server_name": node.name,
            "listen": "127.0.0.1:%d" % node.client_port,
            "http": "127.0.0.1:%d" % node.monitor_port,
            "jetstream": {"store_dir": os.path.join(self.workdir, node.name), "max_mem": 64 << 20},
            "cluster": {"name": "site", "listen": "127.0.0.1:%d" % node.route_port,
                        "routes": ["nats-route://127.0.0.1:%d" % n.route_port for n in self.nodes if n is not node]},
            # sessions, retained and QoS 1 messages on every node: any two of three keep them.
            # max_ack_pending bounds the gateway's commit batch on MQTT 3.1.1 (default 1024);
            # the gateway's two subscriptions together must stay under 65535
            "mqtt": {"listen": "127.0.0.1:%d" % node.mqtt_port, "stream_replicas": NODES, "consumer_replicas": NODES,
                     "max_ack_pending": MAX_ACK_PENDING},
            # MQTT clients need an account with JetStream; the system account is apart
            "accounts": {"SITE": {"jetstream": "enabled", "users": self._users()},
                         "SYS": {"users": [{"user": "sys", "password": os.urandom(8).hex()}]}},
            "system_account": "SYS",
        }
        if self.tls:
            # both listeners: the MQTT one (devices, an MQTT gateway) and the NATS clients'
            # (gateways in a queue group), which then require TLS (INFO tls_required)
            files = {"cert_file": os.path.abspath(self.tls.cert), "key_file": os.path.abspath(self.tls.key)}
            conf["mqtt"]["tls"] = files
            conf["tls"] = dict(files)
        path = os.path.join(self.workdir, node.name + ".conf")
        write_private(path, json.dumps(conf, indent=1))
        return path

    def start(self) -> "NatsCluster":
        os.makedirs(self.workdir, exist_ok=True)
        try:
            for i in range(NODES):
                self.start_node(i, wait=False)
            self.wait_formed()
        except Exception:
            self.stop()
            raise
        return self

    def start_node(self, i: int, wait: bool = True) -> None:
        """Start node i (again: same ports, same JetStream directory)."""
        node = self.nodes[i]
        log = open(os.path.join(self.workdir, node.name + ".log"), "ab")
        node.proc = subprocess.Popen([binary(), "-c", self._config(node)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait:
            self.wait_formed()

    def wait_formed(self, timeout: float = 30) -> None:
        """Until every running node routes to the others and knows the JetStream leader."""
        deadline = time.monotonic() + timeout
        running = [n for n in self.nodes if n.proc is not None]
        while not all(self._formed(n, len(running) - 1) for n in running):
            for n in running:
                if n.proc.poll() is not None:
                    raise RuntimeError("nats-server %s exited with %s:\n%s"
                                       % (n.name, n.proc.returncode, self.log_of(n)))
            if time.monotonic() > deadline:
                raise RuntimeError("the nats-server cluster did not form in %.0f s:\n%s"
                                   % (timeout, "\n".join(self.log_of(n) for n in running)))
            time.sleep(0.1)

    def _formed(self, node: Node, peers: int) -> bool:
        try:
            routes = self.monitor(node, "routez")["num_routes"]
            leader = self.monitor(node, "jsz").get("meta_cluster", {}).get("leader")
        except OSError:
            return False
        return routes >= peers and bool(leader)

    def monitor(self, node: Node, what: str) -> dict:
        with urllib.request.urlopen("http://127.0.0.1:%d/%s" % (node.monitor_port, what), timeout=2) as r:
            return json.load(r)

    def node_of(self, client_id: str) -> int | None:
        """The index of the running node a client is connected to, if any: an MQTT
        client by its client id, a NATS client by the name in its CONNECT."""
        for i, n in enumerate(self.nodes):
            if n.proc is not None and any(client_id in (c.get("mqtt_client"), c.get("name"))
                                          for c in self.monitor(n, "connz")["connections"]):
                return i
        return None

    def stream_leader(self, stream: str = "$MQTT_msgs") -> int | None:
        """The index of the node that leads a JetStream stream of the site's account (by
        default the one that holds the QoS 1 messages), as a running node sees it."""
        names = [n.name for n in self.nodes]
        for n in self.nodes:
            if n.proc is None:
                continue
            for account in self.monitor(n, "jsz?accounts=true&streams=true").get("account_details", []):
                for detail in account.get("stream_detail", []):
                    leader = detail.get("cluster", {}).get("leader")
                    if detail["name"] == stream and leader in names:
                        return names.index(leader)
        return None

    def log_of(self, node: Node) -> str:
        with open(os.path.join(self.workdir, node.name + ".log"), errors="replace") as fh:
            return fh.read()[-3000:]

    def rss_kb(self) -> list[int]:
        """Resident memory of each running node, from /proc."""
        out = []
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                with open("/proc/%d/status" % n.proc.pid) as fh:
                    out += [int(line.split()[1]) for line in fh if line.startswith("VmRSS:")]
        return out

    def kill(self, i: int) -> None:
        """SIGKILL node i: nothing is saved or handed over on the way out."""
        node = self.nodes[i]
        stop(node.proc, 0.1, signal.SIGKILL)
        node.proc = None

    def stop(self) -> None:
        for node in self.nodes:
            stop(node.proc)
            node.proc = None

    def __enter__(self) -> "NatsCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
