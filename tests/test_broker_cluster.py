"""A broker node dies mid-run: nothing lost, nothing twice at the platform.

Five agents under the MicroPython unix port (three elevators, two water meters, each
reading a pymodbus slave on a pty) and the gateway reach a three-node nats-server
cluster (MQTT listener, JetStream replicated to every node; tools/testbench/cluster.py):
the devices through one loopback front that passes each connection to a live node, as a
site's load balancer would, the gateway with the list of the nodes (--broker
mqtts://gateway@n1,n2,n3). TLS on every hop, the site's CA checked by the agents and the
gateway; every device and the gateway log in as their own user. Once all agents deliver,
the node that serves the gateway is killed with SIGKILL: the gateway moves to the next
node, the devices on that node reconnect through the front to the other two, and the
node comes back. Then the node that leads the JetStream stream of the QoS 1 messages is
killed, and comes back. At the end every event the agents generated is stored at the
platform exactly once. docs/broker-cluster.md says why nats-server, and what a site
needs besides.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

import pytest

from test_chaos import booted, fleet, judge, settle
from gateway.broker import BrokerError, parse_broker_url
from tools.common.boards import load_board
from tools.common.credentials import device_acl, gateway_acl
from gateway.nats import subject_of
from tools.testbench.cluster import permissions
from tools.testbench.site import Site

GATEWAY_CLIENT = "edge-gateway-site-gw"     # the Site's first gateway
CONNECTED = "connected to MQTT broker"       # the gateway's log line


def client_of(gateway: str) -> str:
    """A Site gateway's client id: gateway -> edge-gateway-site-gw, gateway-2 -> ...-site-gw-2."""
    return GATEWAY_CLIENT + gateway[len("gateway"):]


def reconnected(site: Site, victim: int, connects: int, timeout: float, gateway: str = "gateway") -> int:
    """Wait until a gateway says it is connected again (more than connects times) after
    the kill of node victim; the index of the node it is on now. (nats-server lists a
    connection once its CONNECT arrives, while the session may still be loading: the
    gateway's own word counts.)"""
    deadline = time.monotonic() + timeout
    while (site.log_of(gateway).count(CONNECTED) <= connects
           or (node := site.cluster.node_of(client_of(gateway))) in (None, victim)):
        assert time.monotonic() < deadline, "%s found no other node in %.0f s" % (gateway, timeout)
        time.sleep(0.5)
    return node


def test_killing_a_broker_node_loses_nothing_and_duplicates_nothing(tmp_path, chaos_scale):
    # TLS on every hop, as on a site: the agents get the heap of the smallest ESP32 board,
    # which TLS needs (docs/tls.md: 98 KB at the least, more than the plain agent's)
    heap = "%dk" % load_board("esp32-devkitc")["heap_kb"]
    devices = [replace(d, heap=heap) for d in fleet(tmp_path)[::2]]
    started = time.monotonic()
    with Site(str(tmp_path / "site"), devices, broker="nats-cluster", tls=True) as site:
        assert site.cluster is not None and site.front is not None
        chaos = booted(site, devices, chaos_scale)
        chaos.note("site up in %.1f s; the nodes' RSS %s kB" % (chaos.t0 - started, site.cluster.rss_kb()))
        chaos.sleep(4)
        # first the node the gateway is connected to: it and the devices there must move
        victim = site.cluster.node_of(GATEWAY_CLIENT)
        assert victim is not None, "the gateway is on no node"
        before = sum(site.front.served.values())
        connects = site.log_of("gateway").count(CONNECTED)
        site.cluster.kill(victim)
        chaos.note("kill -9 nats-server node %d, the gateway's" % (victim + 1))
        moved = reconnected(site, victim, connects, timeout=45)
        chaos.note("the gateway is back, on node %d" % (moved + 1))
        chaos.sleep(3)
        site.cluster.start_node(victim)
        chaos.note("node %d back" % (victim + 1))
        chaos.sleep(3)
        # then the leader of the stream that holds the QoS 1 messages: what it had
        # acknowledged to the devices must be on the other two
        leader = site.cluster.stream_leader()
        assert leader is not None, "no node leads $MQTT_msgs"
        site.cluster.kill(leader)
        chaos.note("kill -9 nats-server node %d, the leader of $MQTT_msgs" % (leader + 1))
        chaos.sleep(8)
        site.cluster.start_node(leader)
        chaos.note("node %d back" % (leader + 1))
        chaos.sleep(3)
        want, events, delivered_ids = settle(site, chaos, devices)
        reconnects = sum(site.front.served.values()) - before
        gateway_log = site.log_of("gateway")
    judge(want, events, delivered_ids, chaos)
    # the kill did cut the gateway and devices off their node, and they went on elsewhere
    assert "lost the MQTT broker" in gateway_log and "Traceback" not in gateway_log
    assert reconnects >= 1


def test_two_gateways_share_the_devices_in_a_nats_queue_group(tmp_path, chaos_scale):
    # nats-server has no MQTT shared subscriptions: the two gateways come as NATS clients
    # (gateway/nats.py) to the nodes' client ports, TLS, in one queue group; the devices
    # as before, MQTT through the front. One gateway dies (SIGKILL) and comes back, then
    # the node the other is on; core NATS delivers at most once to a gateway, and the
    # devices' resends (no end-to-end acknowledgement came) make up for what died with it
    heap = "%dk" % load_board("esp32-devkitc")["heap_kb"]
    devices = [replace(d, heap=heap) for d in fleet(tmp_path)[::3]]
    started = time.monotonic()
    with Site(str(tmp_path / "site"), devices, broker="nats-cluster", tls=True, gateways=2) as site:
        assert site.cluster is not None and site.gateway_nats
        assert site.broker_url.startswith("tls://gateway@")
        chaos = booted(site, devices, chaos_scale)
        chaos.note("site up in %.1f s" % (chaos.t0 - started))
        chaos.sleep(3)
        site.kill("gateway-2")
        chaos.note("kill -9 gateway-2")
        chaos.sleep(3)
        site.start_gateway("gateway-2")
        chaos.note("gateway-2 restarted")
        chaos.sleep(3)
        victim = site.cluster.node_of(GATEWAY_CLIENT)
        assert victim is not None, "the first gateway is on no node"
        connects = site.log_of("gateway").count(CONNECTED)
        site.cluster.kill(victim)
        chaos.note("kill -9 nats-server node %d, the first gateway's" % (victim + 1))
        moved = reconnected(site, victim, connects, timeout=30)
        chaos.note("the first gateway is back, on node %d" % (moved + 1))
        site.cluster.start_node(victim)
        chaos.note("node %d back" % (victim + 1))
        chaos.sleep(3)
        want, events, delivered_ids = settle(site, chaos, devices)
        logs = [site.log_of(name) for name in site.gateways]
    judge(want, events, delivered_ids, chaos)
    # both stored some of the devices' events, and both spoke NATS in the queue group
    by = Counter(e["gateway"] for e in events)
    chaos.note("events by gateway: %s" % dict(by))
    assert set(by) == {"site-gw", "site-gw-2"}, by
    assert all("NATS, queue group site" in log and "Traceback" not in log for log in logs)


def test_the_mosquitto_acl_becomes_nats_permissions():
    # one home for who may do what (tools/common/credentials.py), in NATS subjects
    assert permissions(device_acl("elev-01")) == {"publish": ["dev.elev-01.>"], "subscribe": ["dev.elev-01.cmd.>"]}
    assert permissions(gateway_acl()) == {"publish": ["dev.*.cmd.>"], "subscribe": ["dev.*.ev", "dev.*.status"]}
    # a '.' in a topic level is '//' in the subject (nats-server 2.10 on)
    assert subject_of("dev/wm.7/#") == "dev.wm//7.>"


def test_a_nats_url_names_the_nodes_client_ports():
    # tls:// and nats:// are the gateway speaking NATS (gateway/nats.py), port 4222 by default
    broker = parse_broker_url("tls://gateway@127.0.0.1,127.0.0.1:4223", ca=None)
    assert broker.nats and broker.tls and [n.port for n in broker.nodes()] == [4222, 4223]
    assert broker.url == "tls://gateway@127.0.0.1:4222,127.0.0.1:4223"
    assert parse_broker_url("nats://127.0.0.1").url == "nats://127.0.0.1:4222"
    assert not parse_broker_url("mqtts://h").nats
    # plain NATS has the rule of plain MQTT: loopback only, unless the insecure flag
    with pytest.raises(BrokerError, match="plain NATS .* use tls://10.0.0.5:4222"):
        parse_broker_url("nats://10.0.0.5")
    assert parse_broker_url("nats://10.0.0.5", insecure_plain=True).url == "nats://10.0.0.5:4222"
    with pytest.raises(BrokerError, match="use tls://127.0.0.1:4222"):
        parse_broker_url("nats://127.0.0.1", ca="ca.pem")


def test_a_cluster_url_lists_its_nodes():
    # what the Site gives the gateway: one user, the nodes in turn
    broker = parse_broker_url("mqtt://gateway@127.0.0.1:1883,127.0.0.1:1884,localhost")
    assert [(n.host, n.port, n.username) for n in broker.nodes()] == [
        ("127.0.0.1", 1883, "gateway"), ("127.0.0.1", 1884, "gateway"), ("localhost", 1883, "gateway")]
    assert broker.url == "mqtt://gateway@127.0.0.1:1883,127.0.0.1:1884,localhost:1883"
    # every node obeys the rules: plain MQTT only on loopback, a port is a number, no empty node
    for bad in ("mqtt://127.0.0.1,10.0.0.5", "mqtt://127.0.0.1,127.0.0.1:x", "mqtt://127.0.0.1,"):
        with pytest.raises(BrokerError, match="a cluster's nodes"):
            parse_broker_url(bad)
