"""edgectl provision end to end, every part real: a virtual board (the MicroPython unix port
behind a pty, reached with `mpremote ... resume`) with a pymodbus slave on its bus,
mosquitto with password and ACL files, the gateway logged in as its own user, and the
reference platform receiver."""
import json
import os
import stat
import subprocess
import sys

import pytest

from gateway.registry import Registry
from tools.common import credentials as acl, runtime
from tools.common import boards
from tools.common.devconfig import config_version
from tools.testbench import vboard
from tools.testbench.site import Site

STEPS = ("identity", "config", "gateway", "broker", "build", "deploy", "self-test", "start")


class AuthSite(Site):
    """A site whose mosquitto refuses anonymous clients; the gateway logs in as its user.
    No devices of its own: edgectl provision brings them."""

    def __init__(self, workdir):
        super().__init__(workdir, [])
        self.auth = acl.BrokerAuth(os.path.join(self.workdir, "gateway", "mosquitto"))

    def start_broker(self):
        self.mosquitto = acl.start_broker(self.auth)
        self.broker_port = self.mosquitto.port
        self.broker_password_file = os.path.join(self.auth.dir, "gateway.password")

    @property
    def broker_url(self):
        return "mqtt://%s@127.0.0.1:%d" % (acl.GATEWAY_USER, self.broker_port)


def edgectl(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tools.edgectl", *args], capture_output=True, text=True,
                          cwd=runtime.ROOT, timeout=timeout)


@pytest.fixture
def site(tmp_path):
    s = AuthSite(str(tmp_path / "site")).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def virtual_board(tmp_path):
    d = str(tmp_path / "vb")
    board = vboard.start_virtual(d, sensor="elevator", slave=2)
    try:
        yield board
    finally:
        vboard.stop_virtual(d)


def test_provision_a_virtual_board_end_to_end(tmp_path, site, virtual_board):
    gw_data = os.path.join(site.workdir, "gateway")
    common = ["provision", "--board", "virtual", "--port", virtual_board["console"],
              "--broker", "127.0.0.1:%d" % site.broker_port, "--gateway-data", gw_data,
              "--build-dir", str(tmp_path / "build")]

    # a first try with the wrong slave id: every step runs, the self-test says what to check
    first = edgectl(*common, "--device-id", "elev-prov", "--profile", "elevator", "--bus-port",
                    virtual_board["bus"], "--slave", "5", "--site", "rated_speed=1.0", "--site", "floors=-1,12")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "no answer from slave 5 on %s at 9600 8E1: check the A/B wiring" % virtual_board["bus"] in first.stderr
    for step in ("identity", "config", "gateway", "broker", "build", "deploy", "start"):
        assert "] %-10s" % step in first.stdout, (step, first.stdout)
    secret = Registry.in_dir(gw_data).get("elev-prov").secret

    # the installer fixes the slave id, nothing else: identity and settings are kept
    second = edgectl(*common, "--slave", "2")
    assert second.returncode == 0, second.stdout + second.stderr
    out = second.stdout
    assert "elev-prov (kept from the board)" in out
    assert "slave 2 answered on %s" % virtual_board["bus"] in out
    assert "elev-prov is online at the broker" in out
    assert [line.split("]")[1].split()[0] for line in out.splitlines() if line.startswith("[")] == list(STEPS)
    assert Registry.in_dir(gw_data).get("elev-prov").secret == secret
    events = site.wait_for(lambda ev: {"device.boot", "telemetry.elevator"} <= {
        e["type"] for e in ev if e["device"] == "elev-prov"}, timeout=60)
    assert {"device.boot", "telemetry.elevator"} <= {e["type"] for e in events if e["device"] == "elev-prov"}

    # secrets: never printed, files that hold them are 0600
    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert secret not in text and acl.device_password(secret) not in text
    for path in (os.path.join(gw_data, "devices.json"), site.auth.passwd, site.auth.acl):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    board_cfg = json.load(open(os.path.join(virtual_board["flash"], "config.json")))
    assert board_cfg["bus"]["slave"] == 2 and board_cfg["site"]["floors"] == [-1, 12]
    # the gateway's registry (and its status page) knows which config the board was given
    assert Registry.in_dir(gw_data).get("elev-prov").extra["config"] == config_version(board_cfg)



def test_rotate_gives_a_new_secret_everywhere_and_reports_json(tmp_path, site, virtual_board):
    gw_data = os.path.join(site.workdir, "gateway")
    common = ["provision", "--board", "virtual", "--port", virtual_board["console"],
              "--broker", "127.0.0.1:%d" % site.broker_port, "--gateway-data", gw_data,
              "--build-dir", str(tmp_path / "build"), "--json"]
    first = edgectl(*common, "--device-id", "elev-rot", "--profile", "elevator", "--bus-port", virtual_board["bus"],
                    "--slave", "2", "--site", "rated_speed=1.0", "--site", "floors=-1,12")
    assert first.returncode == 0, first.stdout + first.stderr
    secret = Registry.in_dir(gw_data).get("elev-rot").secret
    rotated = edgectl(*common, "--rotate")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    records = [json.loads(line) for line in rotated.stdout.splitlines()]
    assert [r["step"] for r in records[:-1]] == list(STEPS)
    assert all(r["status"] == "ok" for r in records[:-1]), records
    assert records[0]["identity"] == "new secret" and records[3]["changed"] and records[3]["reloaded"]
    # the start step saw the board come online with its new broker password
    assert records[-2]["online"] is True
    assert records[-1]["result"] == "ok" and records[-1]["device_id"] == "elev-rot"
    new = Registry.in_dir(gw_data).get("elev-rot").secret
    assert new != secret and new not in rotated.stdout + rotated.stderr
    assert json.load(open(os.path.join(virtual_board["flash"], "config.json")))["secret"] == new
    assert acl.check_password(acl.device_password(new), dict(
        line.strip().split(":", 1) for line in open(site.auth.passwd))["elev-rot"])
    # the running gateway takes the events signed with the new secret, without a restart
    boots = lambda ev: {e["boot"] for e in ev if e["device"] == "elev-rot" and e["type"] == "device.boot"}
    events = site.wait_for(lambda ev: len(boots(ev)) >= 2, timeout=60)
    assert len(boots(events)) >= 2, "no event from the rotated device reached the platform"


def test_a_cjt188_meter_is_provisioned_on_a_raspberry_pi_by_its_address(tmp_path):
    """--protocol cjt188 --meter-address: the config carries the meter's bus (2400 8E1, its
    address, no register map), and the self-test reads the simulated meter by it."""
    import threading
    from tools.testbench import scenarios
    from tools.testbench.cjt188_meter import run_meter
    from tools.testbench.vbus import VirtualBus
    trace = scenarios.write(str(tmp_path / "t.jsonl.gz"), *scenarios.water_meter(seconds=600, flow_from=None))
    auth = acl.BrokerAuth(str(tmp_path / "gw" / "mosquitto"))
    broker = acl.start_broker(auth)
    stop, ready = threading.Event(), threading.Event()
    root = tmp_path / "root"
    address = "78330011223344"
    try:
        with VirtualBus(str(tmp_path / "bus")) as bus:
            meter = threading.Thread(target=run_meter, args=(trace, bus.b, address), daemon=True,
                                     kwargs=dict(stop_event=stop, ready=ready))
            meter.start()
            assert ready.wait(10)
            common = ["provision", "--board", "raspberry-pi", "--root", str(root), "--device-id", "wm-188",
                      "--profile", "water_meter", "--bus-port", bus.a, "--protocol", "cjt188",
                      "--broker", "127.0.0.1:%d" % broker.port, "--gateway-data", str(tmp_path / "gw"),
                      "--build-dir", str(tmp_path / "build")]
            wrong = edgectl(*common, "--meter-address", "7833001122334")
            res = edgectl(*common, "--meter-address", address)
            stop.set()
            meter.join(10)       # before its pty goes away
    finally:
        broker.stop()
    assert wrong.returncode == 1 and "--meter-address: config.bus.address: a CJ/T 188 address is 14 digits" \
        in wrong.stderr, wrong.stderr
    assert res.returncode == 0, res.stdout + res.stderr
    assert "meter %s answered on %s (" % (address, bus.a) in res.stdout and "total=" in res.stdout
    cfg = json.load(open(root / "etc" / "citynet-edge" / "config.json"))
    assert cfg["bus"]["protocol"] == "cjt188" and cfg["bus"]["address"] == address
    assert (cfg["bus"]["baud"], cfg["bus"]["parity"]) == (2400, "E") and "map" not in cfg


def test_bad_input_is_refused_before_anything_changes(tmp_path, virtual_board):
    gw_data = str(tmp_path / "gw")
    common = ["provision", "--board", "virtual", "--port", virtual_board["console"], "--gateway-data", gw_data,
              "--broker", "127.0.0.1:1883",
              "--build-dir", str(tmp_path / "build")]
    fresh = edgectl(*common, "--profile", "elevator")
    assert fresh.returncode == 2
    assert "this board has no identity yet: give it one with --device-id" in fresh.stderr
    bad = edgectl(*common, "--device-id", "e1", "--profile", "elevator", "--bus-port", "/dev/null",
                  "--baud", "9601", "--site", "rated_speed=1", "--site", "floors=0,3")
    assert bad.returncode == 1
    assert "--baud: config.bus.baud: 9601 is not one of 1200, 2400" in bad.stderr
    unknown = edgectl(*common, "--device-id", "e1", "--profile", "elevator", "--bus-port", "/dev/null",
                      "--param", "no_such_threshold=3", "--site", "rated_speed=1", "--site", "floors=0,3")
    assert "--param no_such_threshold=VALUE: config.params.no_such_threshold: unknown parameter; known:" \
        in unknown.stderr
    missing = edgectl(*common, "--device-id", "e1", "--profile", "elevator", "--bus-port", "/dev/null")
    assert ("the elevator profile needs --site rated_speed=VALUE (a speed in m/s, 0..20) and "
            "--site floors=VALUE") in missing.stderr
    assert "stopped at config (see above); nothing was changed" in missing.stderr
    assert not os.path.exists(os.path.join(gw_data, "devices.json")), "a refused config registered the device"


def test_package_json_lists_every_agent_module():
    from tools.common.deploy import package_json
    listed = [u[0] for u in json.load(open(os.path.join(runtime.ROOT, "package.json")))["urls"]]
    wanted = [u[0] for u in package_json()["urls"]]
    assert listed == wanted, "package.json is out of step with edge/: run `edgectl board package-json`"


def test_mip_installs_the_agent_from_package_json(tmp_path, virtual_board):
    """`mpremote mip install` as an installer would run it against the repository, here
    served on loopback."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=runtime.ROOT))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        res = boards.Mpremote(virtual_board["console"]).run(
            ["mip", "install", "http://127.0.0.1:%d/package.json" % server.server_address[1]], timeout=120)
    finally:
        server.shutdown()
    lib = os.path.join(virtual_board["flash"], "lib")
    for rel in [u[0] for u in json.load(open(os.path.join(runtime.ROOT, "package.json")))["urls"]]:
        assert os.path.exists(os.path.join(lib, rel)), (rel, res)
    out = boards.Mpremote(virtual_board["console"]).exec("import edge.selftest, edge.link; print('imported')")
    assert "imported" in out


def test_a_raspberry_pi_provisions_itself_under_cpython(tmp_path):
    """--board raspberry-pi runs on the Pi: sources (no .mpy) under ROOT/opt, the config
    (0600) under ROOT/etc, the systemd unit; the self-test runs under CPython with pyserial."""
    import threading
    from tools.testbench import scenarios
    from tools.testbench.simulate import run_simulator
    from tools.testbench.vbus import VirtualBus
    trace = scenarios.write(str(tmp_path / "t.jsonl.gz"), *scenarios.water_meter(seconds=600, flow_from=None))
    auth = acl.BrokerAuth(str(tmp_path / "gw" / "mosquitto"))
    broker = acl.start_broker(auth)
    stop, ready = threading.Event(), threading.Event()
    root = tmp_path / "root"
    try:
        with VirtualBus(str(tmp_path / "bus")) as bus:
            threading.Thread(target=run_simulator, args=("water_meter", trace, bus.b), daemon=True,
                             kwargs=dict(slave=7, stop_event=stop, ready=ready)).start()
            assert ready.wait(10)
            res = edgectl("provision", "--board", "raspberry-pi", "--root", str(root), "--device-id", "wm-pi",
                          "--profile", "water_meter", "--bus-port", bus.a, "--slave", "7",
                          "--broker", "127.0.0.1:%d" % broker.port, "--gateway-data", str(tmp_path / "gw"),
                          "--build-dir", str(tmp_path / "build"))
            stop.set()
    finally:
        broker.stop()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "slave 7 answered on %s" % bus.a in res.stdout
    assert "the gateway user saw it on dev/wm-pi/status" in res.stdout
    assert "start it with: systemctl enable --now citynet-edge-agent.service" in res.stdout
    cfg = root / "etc" / "citynet-edge" / "config.json"
    assert stat.S_IMODE(os.stat(cfg).st_mode) == 0o600
    assert (root / "opt" / "citynet-edge" / "lib" / "edge" / "agent.py").exists()
    assert (root / "etc" / "systemd" / "system" / "citynet-edge-agent.service").exists()


def test_self_test_results_in_plain_words():
    from tools.common.checks import judge
    cfg = {"device_id": "e1", "profile": "elevator", "broker": {"host": "10.0.0.2", "port": 1883},
           "bus": {"port": "/dev/ttyUSB0", "baud": 19200, "parity": "E", "stop": 1, "slave": 3}}
    ok = {"config": {"ok": True}, "broker": {"ok": True}}

    def bad(bus, broker=None, seen=True):
        return "; ".join(judge(dict(ok, bus=bus, broker=broker or {"ok": True}), cfg, seen)[1])
    assert bad({"ok": False, "error": "timeout"}) == (
        "no answer from slave 3 on /dev/ttyUSB0 at 19200 8E1: check the A/B wiring, the slave id "
        "(edgectl scan) and the baud rate")
    assert "check the baud rate and parity, the 120 ohm termination" in bad({"ok": False, "error": "crc"})
    assert "two devices may answer as slave 3" in bad({"ok": False, "error": "frame"})
    assert "it is probably not a device of profile elevator" in bad(
        {"ok": False, "error": "exception", "detail": "exception 2"})
    reading = {"ok": True, "reading": {"speed": 0.0}}
    assert "cannot reach the broker at 10.0.0.2:1883" in bad(reading, {"ok": False, "error": "unreachable"})
    assert "refused e1's user name or password" in bad(reading, {"ok": False, "error": "refused"})
    assert "did not reach the gateway user: the ACL file lacks its lines" in bad(reading, seen=False)
    good, none = judge(dict(ok, bus=reading), cfg, None, "no gateway password here")
    assert not none and "topic permissions not checked: no gateway password here" in good[1]


def test_an_esp32_gets_boot_py_and_its_wifi_in_private_files(tmp_path):
    import argparse
    from tools.common import deploy
    from tools.common import devconfig as provision
    spec = boards.load_board("esp32-devkitc")
    pw = tmp_path / "pw"
    pw.write_text("site-secret\n")
    args = argparse.Namespace(wifi_ssid="lift-room", wifi_password_file=str(pw))
    wifi = provision.wifi_settings(args, spec)
    (tmp_path / "lib").mkdir()
    files, tmp = deploy.files_for(str(tmp_path), spec, {"device_id": "e1"}, wifi)
    by_dest = {dest: src for src, dest in files}
    assert set(by_dest) == {"boot.py", "wifi.json", "main.py", "config.json"}
    for private in ("wifi.json", "config.json"):
        assert stat.S_IMODE(os.stat(by_dest[private]).st_mode) == 0o600
    assert json.load(open(by_dest["wifi.json"])) == {"ssid": "lift-room", "password": "site-secret"}
    assert "agent.main(['main.py', 'config.json', '/state'])" in open(by_dest["main.py"]).read()
    # boot.py is MicroPython that mpy-cross accepts
    subprocess.run([runtime.mpy_cross(), "-o", str(tmp_path / "boot.mpy"), by_dest["boot.py"]], check=True)
    with pytest.raises(provision.ProvisionError, match="does not use Wi-Fi"):
        provision.wifi_settings(args, boards.load_board("virtual"))
