"""TLS on the MQTT hops, with a CA of the test's own (tools/testbench/pki.py): mosquitto's
TLS-only listener, the agent's link (MicroPython's ssl, and CPython's on a Pi) and the
gateway's client accept the right CA and refuse a wrong CA and plain TCP; plain MQTT off
loopback and a broker password on the command line are refused with what to do."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from edge import mqtt
from gateway import cli
from gateway.broker import PASSWORD_ENV, BrokerError, broker_password, parse_broker_url
from gateway.service import Gateway, GatewayConfig
from tools.common import runtime
from tools.common.credentials import der_certificate
from tools.common.mosquitto import Mosquitto, ServerTls
from tools.testbench.pki import make_ca

CONNECT = mqtt.connect("tls-probe", 30, True, None, None, None)


@pytest.fixture
def site_pki(tmp_path: Path) -> dict[str, str]:
    """The site's CA, the broker's certificate from it, and another CA; DER copies for boards."""
    ca = make_ca(str(tmp_path / "pki"))
    pair = ca.issue(str(tmp_path / "pki"), "broker")
    other = make_ca(str(tmp_path / "other"), "some other CA")
    files = {"ca": ca.cert, "cert": pair.cert, "key": pair.key, "other": other.cert}
    for name in ("ca", "other"):
        files[name + ".der"] = str(tmp_path / (name + ".der"))
        Path(files[name + ".der"]).write_bytes(der_certificate(files[name]))
    return files


@pytest.fixture
def tls_broker(tmp_path: Path, site_pki: dict[str, str]):
    broker = Mosquitto(str(tmp_path / "mosquitto"), persistence=False,
                       tls=ServerTls(site_pki["ca"], site_pki["cert"], site_pki["key"])).start()
    try:
        yield broker
    finally:
        broker.stop()


def connack(sock: socket.socket) -> bytes:
    """CONNECT, and what comes back before the broker closes (b"" for nothing)."""
    sock.sendall(CONNECT)
    try:
        return sock.recv(4)
    except ConnectionResetError:
        return b""


def test_mosquitto_serves_tls_only_and_its_certificate_checks_against_the_site_ca(tls_broker, site_pki):
    def tls_client(cafile: str) -> ssl.SSLSocket:
        ctx = ssl.create_default_context(cafile=cafile)
        return ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_broker.port), 5),
                               server_hostname="127.0.0.1")
    with tls_client(site_pki["ca"]) as good:
        assert connack(good) == b"\x20\x02\x00\x00"
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        tls_client(site_pki["other"])
    with socket.create_connection(("127.0.0.1", tls_broker.port), 5) as plain:
        assert connack(plain) == b""     # no CONNACK: the listener speaks nothing but TLS


PROBE = """
import gc, sys
from edge.link import Link
broker = json.loads(sys.argv[1])
gc.collect()
before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
link = Link(broker, "elev-tls", log=print)
try:
    link.connect()
    link.publish(b"over tls")
    gc.collect()
    print("heap while connected: %d" % ((gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0) - before))
    link.close()
    print("published")
except OSError as e:
    print("link down: %s" % e)
"""


def run_link(tmp_path: Path, runtime_name: str, broker: dict) -> str:
    """The agent's own link (edge/link.py) under a runtime: connect, one publish."""
    script = tmp_path / "probe.py"
    script.write_text("import json\n" + PROBE)
    if runtime_name == "micropython":
        argv = [runtime.micropython(), "-X", "heapsize=" + runtime.AGENT_HEAP, str(script)]
        env = runtime.micropython_env()
    else:
        argv, env = [sys.executable, str(script)], dict(os.environ, PYTHONPATH=runtime.ROOT)
    proc = subprocess.run(argv + [json.dumps(broker)], capture_output=True, text=True, env=env, timeout=60)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("runtime_name", ["micropython", "cpython"])
def test_the_agents_link_checks_the_brokers_certificate(tmp_path, tls_broker, site_pki, runtime_name):
    broker = {"host": "127.0.0.1", "port": tls_broker.port, "keepalive": 30, "tls": True}
    out = run_link(tmp_path, runtime_name, dict(broker, ca=site_pki["ca.der"]))
    assert "mqtt connected to 127.0.0.1:%d" % tls_broker.port in out and "published" in out, out
    if runtime_name == "micropython":
        # the MicroPython heap a connected TLS link holds (a plain one: about 300 B); mbedTLS's
        # own buffers are not on it (docs/tls.md)
        held = int(out.split("heap while connected: ")[1].split()[0])
        assert held < 6 * 1024, out
    # a wrong CA: refused, and the log line says why and what to check
    out = run_link(tmp_path, runtime_name, dict(broker, ca=site_pki["other.der"]))
    assert "link down: TLS refused:" in out and "broker.ca must be the CA" in out, out
    assert ("not correctly signed by the trusted CA" if runtime_name == "micropython"
            else "certificate verify failed") in out, out
    # plain MQTT to the TLS-only listener: no CONNACK
    out = run_link(tmp_path, runtime_name, {"host": "127.0.0.1", "port": tls_broker.port, "keepalive": 30})
    assert "link down:" in out and "published" not in out, out


def test_the_gateway_connects_over_tls_and_refuses_a_wrong_ca_or_plain(tmp_path, tls_broker, site_pki):
    async def start(broker: str, ca: str | None) -> Gateway:
        cfg = GatewayConfig(data_dir=tmp_path / "gw", platform_url="http://127.0.0.1:9", broker=broker,
                            broker_ca=ca, gateway_id="gw-tls")
        return Gateway(cfg)

    async def main() -> None:
        async with await start(tls_broker.url, site_pki["ca"]) as gw:
            assert gw.metrics.states["broker_connected"] == 1
            assert gw.broker_address is not None and gw.broker_address.url.startswith("mqtts://")
        with pytest.raises(BrokerError, match="certificate verify failed"):
            async with await start(tls_broker.url, site_pki["other"]):
                pass
        with pytest.raises(BrokerError, match="cannot connect to the MQTT broker"):
            async with await start(tls_broker.url.replace("mqtts:", "mqtt:"), None):
                pass
        with pytest.raises(BrokerError, match="--broker-ca .*: cannot load it"):
            async with await start(tls_broker.url, str(tmp_path / "missing.pem")):
                pass
    assert tls_broker.url.startswith("mqtts://127.0.0.1:")
    asyncio.run(main())


def test_plain_mqtt_off_loopback_is_refused_unless_declared_insecure():
    with pytest.raises(BrokerError, match=r"plain MQTT .* use mqtts://10.0.0.5:8883 with --broker-ca FILE"):
        parse_broker_url("mqtt://10.0.0.5")
    assert parse_broker_url("mqtt://10.0.0.5", insecure_plain=True).port == 1883
    assert parse_broker_url("mqtt://localhost:1884").port == 1884
    with pytest.raises(BrokerError, match="plain MQTT"):
        parse_broker_url("mqtt://127.attacker.example")     # a name, not 127.0.0.0/8
    tls = parse_broker_url("mqtts://broker.site", ca="ca.pem")
    assert (tls.port, tls.tls, tls.url) == (8883, True, "mqtts://broker.site:8883")
    with pytest.raises(BrokerError, match="--broker-ca is for a TLS broker"):
        parse_broker_url("mqtt://127.0.0.1", ca="ca.pem")


def test_the_broker_password_never_comes_from_the_command_line(tmp_path, capsys, monkeypatch):
    argv = ["run", "--data", str(tmp_path), "--broker", "mqtts://gateway:hunter2@127.0.0.1:1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "--broker-password-file FILE" in err and "mqtts://gateway:***@" in err
    path = tmp_path / "broker.password"
    path.write_text("s3cret\n")
    path.chmod(0o644)
    with pytest.raises(BrokerError, match="mode 0644 lets other users read the password; chmod 600"):
        broker_password(str(path))
    path.chmod(0o600)
    assert broker_password(str(path)) == "s3cret"
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert broker_password(None) == "from-env"
    assert "s3cret" not in repr(GatewayConfig(data_dir=tmp_path, broker_password="s3cret"))


def test_end_to_end_over_tls(tmp_path):
    """The MicroPython agent as shipped (.mpy, the heap of the smallest ESP32 board: TLS
    needs about 6 KB more than the 96k it runs in without) -> mosquitto, TLS only ->
    gateway -> platform over HTTPS, every certificate checked against the site's CA."""
    from tools.common.boards import load_board
    from tools.testbench import scenarios
    from tools.testbench.site import Device, Site
    heap = "%dk" % load_board("esp32-devkitc")["heap_kb"]
    elev = scenarios.write(str(tmp_path / "elev.jsonl.gz"), *scenarios.elevator(seconds=600, entrapment_at=30))
    with Site(str(tmp_path / "site"), [Device("elev-tls", "elevator", elev, speed=4, heap=heap)], tls=True) as site:
        events = site.wait_for(lambda ev: any(e["type"] == "elevator.entrapment" for e in ev), timeout=90)
        assert "mqtt connected to 127.0.0.1:%d" % site.broker_port in site.log_of("agent-elev-tls")
        assert "broker mqtts://" in site.log_of("gateway") and site.platform_url.startswith("https://")
    assert [e for e in events if e["type"] == "elevator.entrapment" and e["action"] == "raise"]
    assert [e for e in events if e["type"] == "telemetry.elevator"]


@pytest.mark.parametrize("unit", ["citynet-edge-agent.service", "citynet-edge-gateway.service",
                                  "citynet-platform.service"])
def test_the_systemd_units_run_unprivileged_and_confined(unit):
    import re
    import shutil
    path = os.path.join(runtime.ROOT, "boards", unit)
    lines = {line.strip() for line in open(path)}
    assert "DynamicUser=yes" in lines or any(x.startswith("User=") and x != "User=root" for x in lines)
    for needed in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "CapabilityBoundingSet=",
                   "UMask=0077", "ProtectHome=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"):
        assert needed in lines, needed
    # secrets reach the service as systemd credentials, never in its command line
    assert any(x.startswith("LoadCredential=") for x in lines)
    if shutil.which("systemd-analyze"):     # systemd's own score: 0 (confined) .. 10 (exposed)
        out = subprocess.run(["systemd-analyze", "security", "--offline=yes", path],
                             capture_output=True, text=True).stdout
        score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
        assert score <= 2.0, out


def test_provisioning_puts_the_ca_on_the_board_which_then_connects_over_tls(tmp_path):
    """edgectl provision --broker-ca: the CA goes on the virtual board beside its config (as
    DER), the board's self-test and agent connect to a TLS-only mosquitto with accounts, the
    gateway too, and the events reach the platform. Without --broker-ca, a broker that is
    not on the board is refused before anything changes."""
    from test_provision import AuthSite, edgectl
    from tools.common import credentials as acl
    from tools.common.boards import load_board
    from tools.testbench import vboard

    class TlsAuthSite(AuthSite):
        def __init__(self, workdir):
            super().__init__(workdir)
            self.tls = True          # the platform serves HTTPS too

        def start_broker(self):
            pair = self._certificate("broker")
            self.mosquitto = acl.start_broker(self.auth, tls=ServerTls(self.ca.cert, pair.cert, pair.key))
            self.broker_port = self.mosquitto.port
            self.broker_password_file = os.path.join(self.auth.dir, "gateway.password")

        @property
        def broker_url(self):
            return "mqtts://%s@127.0.0.1:%d" % (acl.GATEWAY_USER, self.broker_port)

    board_dir = str(tmp_path / "vb")
    board = vboard.start_virtual(board_dir, sensor="elevator", slave=2,
                                 heap="%dk" % load_board("esp32-devkitc")["heap_kb"])
    site = TlsAuthSite(str(tmp_path / "site")).start()
    try:
        gw_data = os.path.join(site.workdir, "gateway")
        common = ["provision", "--board", "virtual", "--port", board["console"], "--gateway-data", gw_data,
                  "--build-dir", str(tmp_path / "build"), "--device-id", "elev-ptls", "--profile", "elevator",
                  "--bus-port", board["bus"], "--slave", "2", "--site", "rated_speed=1.0", "--site", "floors=-1,12"]
        plain = edgectl(*common, "--broker", "192.0.2.7")
        assert plain.returncode != 0 and "plain MQTT would send the password" in plain.stderr, plain.stderr
        assert "--broker-ca" in plain.stderr and "nothing was changed" in plain.stderr
        done = edgectl(*common, "--broker", "127.0.0.1:%d" % site.broker_port, "--broker-ca", site.ca.cert)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "elev-ptls is online at the broker" in done.stdout
        cfg = json.load(open(os.path.join(board["flash"], "config.json")))
        assert (cfg["broker"]["tls"], cfg["broker"]["ca"]) == (True, "ca.der")
        assert Path(board["flash"], "ca.der").read_bytes() == der_certificate(site.ca.cert)
        events = site.wait_for(lambda ev: any(e["device"] == "elev-ptls" for e in ev), timeout=60)
        assert any(e["device"] == "elev-ptls" for e in events)
    finally:
        site.stop()
        vboard.stop_virtual(board_dir)


def test_the_agents_config_refuses_plain_mqtt_off_the_board(tmp_path):
    from edge import config
    base = {"device_id": "elev-c", "secret": "ab" * 16, "profile": "water_meter", "bus": {"port": "/dev/ttyUSB0"}}

    def load(broker: dict) -> dict:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(dict(base, broker=broker)))
        return config.load(str(path))
    with pytest.raises(config.ConfigError, match="config.broker.host: 192.168.10.2 is not this machine.*broker.tls"):
        load({"host": "192.168.10.2"})
    assert load({"host": "192.168.10.2", "insecure_plain": True})["broker"]["port"] == 1883
    with pytest.raises(config.ConfigError, match="config.broker.ca: required with broker.tls"):
        load({"host": "192.168.10.2", "tls": True})
    with pytest.raises(config.ConfigError, match="config.broker.ca: cannot read .*ca.der"):
        load({"host": "192.168.10.2", "tls": True, "ca": "ca.der"})
    (tmp_path / "ca.der").write_bytes(b"\x30")
    # a relative CA is beside the config, wherever the agent runs from
    assert load({"host": "192.168.10.2", "tls": True, "ca": "ca.der"})["broker"]["ca"] == str(tmp_path / "ca.der")
