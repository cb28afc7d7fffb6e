"""`edgectl provision`: give a board its identity and configuration, put the agent on it,
prove that it reads its sensor and reaches the broker, and start it.

Steps, each reported as it ends (a progress bar while it runs on a terminal, --json for
scripts): identity, config, gateway, broker, build, deploy, self-test, start. Running it
again on the same board keeps the board's identity and settings and changes only what
the flags say; --rotate gives it a new secret. Secrets are never printed and every file
holding one is written with mode 0600.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import threading
import time

from edge import config as schema
from tools import acl, board as boards
from tools.deploy import LocalTarget, MpremoteTarget, Target, build_agent, files_for
from tools.report import Reporter, StepFailed

STEPS = 8
PROFILES = schema.PROFILES
# config path -> the flag that sets it, so a schema error names what the installer typed
FLAGS = {
    "device_id": "--device-id", "profile": "--profile", "bus.port": "--bus-port", "bus.baud": "--baud",
    "bus.parity": "--parity", "bus.stop": "--stop-bits", "bus.slave": "--slave",
    "bus.word_order": "--word-order", "bus.timeout_ms": "--timeout-ms", "bus.retries": "--retries",
    "broker.host": "--broker", "broker.port": "--broker",
}
# what the self-test's Modbus error kinds mean on site
BUS_ADVICE = {
    "timeout": "no answer from slave {slave} on {port} at {line}: check the A/B wiring, the slave id "
               "(edgectl scan) and the baud rate",
    "crc": "replies from slave {slave} on {port} fail their CRC at {line}: check the baud rate and parity, "
           "the 120 ohm termination at both ends and the cable shield",
    "frame": "malformed replies on {port} at {line}: two devices may share slave id {slave}, or the baud "
             "rate is wrong; check with edgectl scan",
    "exception": "slave {slave} on {port} refused the read ({detail}): it is probably not a device of "
                 "profile {profile}, or its register map differs; check --profile and the slave id",
    "open": "the board cannot open its sensor port {port} ({detail}): check --bus-port",
}


class ProvisionError(Exception):
    """Bad input, found before anything is changed: exit status 2."""


def _kv(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("%r is not NAME=VALUE" % text)
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    if key == "floors" and isinstance(value, str) and "," in value:
        parsed = [int(x) for x in value.split(",")]
    return key, parsed


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    ap.epilog = ("examples:\n"
                 "  edgectl provision --board virtual --device-id elev-demo --profile elevator \\\n"
                 "      --site rated_speed=1.0 --site floors=-1,12\n"
                 "      (starts a virtual board with a simulated elevator in ./virtual-board)\n"
                 "  edgectl provision --board esp32-devkitc --port /dev/ttyUSB0 --device-id elev-b7-1 \\\n"
                 "      --profile elevator --slave 3 --baud 19200 --broker 192.168.1.10 \\\n"
                 "      --site rated_speed=1.75 --site floors=-2,18\n"
                 "  edgectl provision --board esp32-devkitc --port /dev/ttyUSB0   (again: keeps identity and settings)\n"
                 "what each error means: docs/install.md")
    g = ap.add_argument_group("board")
    g.add_argument("--board", required=True, choices=boards.known_boards(), help="the board (boards/*.json)")
    g.add_argument("--port", help="the board's serial console, e.g. /dev/ttyUSB0; for --board virtual, "
                                  "omit it to start a virtual board in --virtual-dir")
    g.add_argument("--virtual-dir", default=boards.DEFAULT_VIRTUAL_DIR,
                   help="where the virtual board lives (default: %(default)s)")
    g.add_argument("--root", default="/", help="raspberry-pi only: install under this root (default: /)")
    g.add_argument("--wifi-ssid", help="ESP32: the site's Wi-Fi network (kept on the board in wifi.json)")
    g.add_argument("--wifi-password-file", metavar="FILE",
                   help="ESP32: a file holding the Wi-Fi password (default: asked for, not echoed)")
    g = ap.add_argument_group("identity")
    g.add_argument("--device-id", help="the device's id (a fresh board needs one; a provisioned board keeps its own)")
    g.add_argument("--rotate", action="store_true", help="give the device a new secret (and broker password)")
    g = ap.add_argument_group("sensor")
    g.add_argument("--profile", choices=PROFILES, help="what the sensor is")
    g.add_argument("--bus-port", help="the sensor's serial port as the board sees it")
    g.add_argument("--baud", type=int, help="baud rate (default 9600)")
    g.add_argument("--parity", choices=("N", "E", "O"), help="parity (default E)")
    g.add_argument("--stop-bits", type=int, choices=(1, 2), help="stop bits (default 1)")
    g.add_argument("--slave", type=int, help="Modbus slave id, 1..247 (default 1)")
    g.add_argument("--word-order", choices=("ABCD", "BADC", "CDAB", "DCBA"),
                   help="order of the bytes of 32-bit values (default ABCD)")
    g.add_argument("--timeout-ms", type=int, help="reply timeout (default 300)")
    g.add_argument("--retries", type=int, help="retries per poll (default 2)")
    g.add_argument("--site", type=_kv, action="append", default=[], metavar="NAME=VALUE",
                   help="installation facts, e.g. rated_speed=1.75, floors=-2,18, occupants=1")
    g.add_argument("--param", type=_kv, action="append", default=[], metavar="NAME=VALUE",
                   help="threshold override, e.g. door_open_moving_s=3 (names: docs/filters.md)")
    g = ap.add_argument_group("gateway")
    g.add_argument("--broker", metavar="HOST[:PORT]",
                   help="the broker as the board reaches it; for --board virtual, omit it to run a "
                        "sandbox broker (edgectl broker) from the --broker-auth directory")
    g.add_argument("--gateway-data", default="gateway-data",
                   help="the gateway's data directory: devices.json (default: %(default)s)")
    g.add_argument("--broker-auth", metavar="DIR",
                   help="mosquitto password and ACL files (default: GATEWAY_DATA/mosquitto)")
    g = ap.add_argument_group("output")
    g.add_argument("--build-dir", default="build", help="where the compiled agent goes (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="one JSON object per step, and a summary, on stdout")


# ---------------------------------------------------------------- steps
def choose_identity(args, existing: dict | None, registry) -> tuple[str, str, str]:
    """(device_id, secret, how): the board's own identity unless told otherwise."""
    board_id = (existing or {}).get("device_id")
    device_id = args.device_id or board_id
    if not device_id:
        raise ProvisionError("this board has no identity yet: give it one with --device-id NAME "
                             "(letters, digits, '-', '_' or '.', e.g. elev-b7-1)")
    if board_id and device_id != board_id and not args.rotate:
        raise ProvisionError("the board on %s is already %s; to make it %s instead, add --rotate "
                             "(it then gets a new secret)" % (args.port, board_id, device_id))
    if args.rotate:
        return device_id, acl.secrets.token_hex(32), "new secret (rotated)"
    if board_id == device_id and existing.get("secret"):
        return device_id, existing["secret"], "kept from the board"
    known = registry.get(device_id)
    if known is not None:
        return device_id, known.secret, "kept from the gateway registry"
    return device_id, acl.secrets.token_hex(32), "new"


def build_config(args, existing: dict | None, device_id: str, secret: str, spec: dict, bus_port: str | None) -> dict:
    keep = {k: v for k, v in (existing or {}).items() if k not in ("device_id", "secret")}
    cfg = copy.deepcopy(keep)
    cfg["device_id"] = device_id
    cfg["secret"] = secret
    if args.profile:
        cfg["profile"] = args.profile
    bus = cfg.setdefault("bus", {})
    for key, flag in (("baud", "baud"), ("parity", "parity"), ("stop", "stop_bits"), ("slave", "slave"),
                      ("word_order", "word_order"), ("timeout_ms", "timeout_ms"), ("retries", "retries")):
        if getattr(args, flag) is not None:
            bus[key] = getattr(args, flag)
    if bus_port:
        bus["port"] = bus_port
    # the board's wiring and flash (UART pins, DE/RE, watchdog, outbox size) go in
    # wherever the schema has a place for them
    for key, value in spec.get("uart", {}).items():
        if "bus." + key in schema.SCHEMA:
            bus.setdefault(key, value)
    for path, value in (("watchdog_ms", spec.get("watchdog_ms")), ("outbox.kb", spec.get("flash", {}).get("outbox_kb"))):
        if value is not None and path in schema.SCHEMA and path.split(".")[0] not in keep:
            section, _, leaf = path.rpartition(".")
            (cfg.setdefault(section, {}) if section else cfg)[leaf] = value
    if "port" not in bus and spec.get("default_port"):
        bus["port"] = spec["default_port"]
    if "port" not in bus and "uart_id" in spec.get("uart", {}):
        bus["port"] = "uart%d" % spec["uart"]["uart_id"]
    broker = cfg.setdefault("broker", {})
    if args.broker:
        host, _, port = args.broker.partition(":")
        broker["host"] = host
        if port:
            broker["port"] = int(port) if port.isdigit() else port
    elif "host" not in broker and spec["port"] == "unix":
        broker["host"] = "127.0.0.1"
    broker["user"] = device_id
    broker["password"] = acl.device_password(secret)
    for key, value in args.site:
        cfg.setdefault("site", {})[key] = value
    for key, value in args.param:
        cfg.setdefault("params", {})[key] = value
    return cfg


def validate(cfg: dict) -> dict:
    # what the profile cannot run without, all at once rather than one per attempt
    missing = [p for p in schema.PROFILE_REQUIRES.get(cfg.get("profile"), ())
               if p.partition(".")[2] not in (cfg.get(p.partition(".")[0]) or {})]
    if len(missing) > 1:
        raise StepFailed("the %s profile needs %s" % (cfg["profile"], " and ".join(
            "--site %s=VALUE (%s)" % (p.partition(".")[2], schema.SCHEMA[p][3]) for p in missing)))
    checked = schema.validate(copy.deepcopy(cfg))
    from edge.pipeline import load_module, merge_params
    from edge.detect import common
    det = load_module("edge.detect." + checked["profile"])
    try:
        merge_params([common.PARAMS] + ([det.PARAMS] if det else []), checked.get("params"))
    except ValueError as e:
        raise schema.ConfigError("config." + str(e)) from None
    return checked


def explain_config_error(e: Exception) -> str:
    """The schema's message, led by the flag that sets the field, and what it allows."""
    text = str(e)
    path = text.split(":")[0].replace("config.", "")
    section, _, name = path.partition(".")
    flag = FLAGS.get(path) or ("--%s %s=VALUE" % ({"params": "param"}.get(section, section), name)
                               if section in ("site", "params") else "")
    if text.endswith("required field is missing"):
        if path == "bus.port":
            text += " (the sensor's serial port as the board sees it)"
        elif path in schema.SCHEMA and schema.SCHEMA[path][3]:
            text += " (%s)" % schema.SCHEMA[path][3]
    return "%s%s" % (flag + ": " if flag else "", text)


def judge(report: dict, cfg: dict, seen: bool | None = None, why_unseen: str = "") -> tuple[list[str], list[str]]:
    """The self-test's result as (what worked, what is wrong and what to do). seen: whether
    the gateway user saw the board's "online" (None: could not watch)."""
    good, bad = [], []
    if not report["config"]["ok"]:
        return good, ["the board rejected its config: %s" % report["config"]["detail"]]
    b = cfg["bus"]
    line = "%d %d%s%d" % (b["baud"], 8, b["parity"], b["stop"])
    bus = report["bus"]
    if bus["ok"]:
        reading = ", ".join("%s=%s" % kv for kv in sorted(bus["reading"].items()))
        good.append("slave %d answered on %s (%s)" % (b["slave"], b["port"], reading))
    else:
        advice = BUS_ADVICE.get(bus["error"], "the sensor read failed on {port}: {detail}")
        bad.append(advice.format(slave=b["slave"], port=b["port"], line=line, profile=cfg["profile"],
                                 detail=bus.get("detail", "")))
    br = report["broker"]
    where = "%s:%d" % (cfg["broker"]["host"], cfg["broker"]["port"])
    dev = cfg["device_id"]
    if br["ok"] and seen:
        good.append("connected to the broker at %s as %s; the gateway user saw it on dev/%s/status" % (
            where, dev, dev))
    elif br["ok"] and seen is None:
        good.append("connected to the broker at %s as %s (topic permissions not checked: %s)" % (
            where, dev, why_unseen))
    elif br["ok"]:
        bad.append("the broker at %s let %s in, but what it published on dev/%s/status did not reach the "
                   "gateway user: the ACL file lacks its lines or the broker has not reloaded it (systemctl "
                   "reload mosquitto, or kill -HUP its pid)" % (where, dev, dev))
    elif br["error"] == "unreachable":
        bad.append("the board cannot reach the broker at %s (%s): check --broker, the network between the "
                   "board and the gateway, and that the broker runs" % (where, br.get("detail", "")))
    elif br["error"] == "refused":
        bad.append("the broker at %s refused %s's user name or password (%s): the broker has not read "
                   "the new password file; reload it (systemctl reload mosquitto, or kill -HUP its pid) and "
                   "run provision again" % (where, dev, br.get("detail", "")))
    return good, bad


# ---------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    rep = Reporter(json_mode=args.json, total=STEPS)
    try:
        return provision(args, rep)
    except (ProvisionError, StepFailed, boards.BoardError) as e:
        if rep.json_mode or not rep.steps:
            rep.summary(False, "edgectl provision: %s" % e, error=str(e))
        else:
            last = rep.steps[-1]["step"]
            changed = last not in ("identity", "config")
            rep.summary(False, "edgectl provision: stopped at %s (see above); %s" % (
                last, "fix it and run the same command again: the identity is kept" if changed
                else "nothing was changed"), error=str(e))
        return 2 if isinstance(e, ProvisionError) else 1


def provision(args: argparse.Namespace, rep: Reporter) -> int:
    from gateway.registry import Registry, RegistryError
    spec = boards.load_board(args.board)
    wifi = wifi_settings(args, spec)
    bus_port = args.bus_port
    if spec["port"] == "cpython":
        target: Target = LocalTarget(args.root, spec)
    else:
        if not args.port:
            if args.board != "virtual":
                raise ProvisionError("give the board's serial port with --port (e.g. /dev/ttyUSB0; "
                                     "ls /dev/ttyUSB* /dev/ttyACM* lists them)")
            if not boards.info(args.virtual_dir):
                rep.note("starting a virtual board with a simulated %s in %s (stop it with: edgectl board "
                         "stop --dir %s)" % (args.profile or "elevator", args.virtual_dir, args.virtual_dir))
            vb = boards.start_virtual(args.virtual_dir, sensor=args.profile or "elevator")
            args.port = vb["console"]
            bus_port = bus_port or vb.get("bus")
        target = MpremoteTarget(args.port, spec)
    try:
        registry = Registry.in_dir(args.gateway_data)
    except RegistryError as e:
        raise ProvisionError(str(e)) from None
    auth = acl.BrokerAuth(args.broker_auth or os.path.join(args.gateway_data, "mosquitto"))
    if args.board == "virtual" and not args.broker:
        # a sandbox: its own broker, with the password and ACL files provision writes
        if acl.running_port(auth) is None:
            rep.note("starting a broker for the virtual board from %s (stop it with: edgectl broker --stop "
                     "--dir %s)" % (auth.dir, auth.dir))
        try:
            args.broker = "127.0.0.1:%d" % acl.ensure_broker(auth)
        except RuntimeError as e:
            raise ProvisionError(str(e)) from None

    with rep.step("identity", "reading the board's identity") as st:
        existing = target.read_config()
        device_id, secret, how = choose_identity(args, existing, registry)
        st.done("%s (%s)" % (device_id, how), device_id=device_id, identity=how.split(" (")[0])

    with rep.step("config", "checking the configuration") as st:
        cfg = build_config(args, existing, device_id, secret, spec, bus_port)
        try:
            cfg = validate(cfg)
        except schema.ConfigError as e:
            raise StepFailed(explain_config_error(e)) from None
        b = cfg["bus"]
        st.done("%s, slave %d on %s at %d %d%s%d, word order %s; broker %s:%d" % (
            cfg["profile"], b["slave"], b["port"], b["baud"], 8, b["parity"], b["stop"], b["word_order"],
            cfg["broker"]["host"], cfg["broker"]["port"]), profile=cfg["profile"])

    with rep.step("gateway", "registering with the gateway") as st:
        try:
            known = registry.get(device_id)
            registry.add(device_id, cfg["profile"], secret, replace=True, board=args.board)
            registry.save()
        except RegistryError as e:
            raise StepFailed(str(e)) from None
        st.done("%s %s in %s (mode 0600)" % ("updated" if known else "added", device_id, registry.path),
                registry=str(registry.path))

    with rep.step("broker", "writing broker credentials") as st:
        changed = auth.add_device(device_id, secret)
        pid = auth.reload() if changed else None
        how = ("broker reloaded (pid %d)" % pid if pid else
               "unchanged" if not changed else
               "reload the broker to apply: systemctl reload mosquitto (or kill -HUP its pid)")
        st.done("user %s may publish dev/%s/# and subscribe dev/%s/cmd/# (%s); %s" % (
            device_id, device_id, device_id, auth.dir, how), reloaded=bool(pid), changed=changed)

    with rep.step("build", "compiling the agent") as st:
        out, modules = build_agent(spec, args.board, args.build_dir, st)
        st.done("%d modules as .mpy in %s%s" % (modules, out, ", manifest.py for a frozen firmware"
                                                  if spec.get("manifest") else ""), build=out)

    with rep.step("deploy", "copying to the board") as st:
        files = files_for(out, spec, cfg, wifi)
        try:
            copied = target.deploy(files[0], st.progress)
        finally:
            shutil.rmtree(files[1], ignore_errors=True)
        st.done("%d files on %s, %d changed (config.json holds the secret)" % (len(files[0]), target.name, copied),
                files=len(files[0]), changed=copied)

    # watch the device's status topic as the gateway from here on: what the board
    # publishes with its new credentials must reach the gateway's user
    watch = OnlineWatch(cfg, auth)
    failure = None
    try:
        try:
            with rep.step("self-test", "one sensor read and one broker connection on the board") as st:
                report = target.selftest()
                seen = watch.seen(5) if report.get("broker", {}).get("ok") and watch.client else None
                good, bad = judge(report, cfg, seen, watch.why)
                if bad:
                    raise StepFailed("; ".join(bad), selftest=report)
                st.done("; ".join(good), selftest=report)
        except StepFailed as e:
            # the agent is started all the same: it keeps retrying and reports what fails
            failure = e
        with rep.step("start", "starting the agent") as st:
            watch.arm()
            how, started = target.start()
            st.done(how + ("; " + watch.wait(30, st) if started else ""), online=watch.online)
    finally:
        watch.close()

    follow = "edgectl logs --port %s" % args.port if args.port else "journalctl -fu %s" % spec.get("service")
    if failure:
        rep.summary(False, "provisioned %s, but the self-test failed (see above); fix it and run the same "
                           "command again: the identity is kept" % device_id, device_id=device_id)
        return 1
    rep.summary(True, "provisioned %s (%s) on %s: the agent is running; follow it with: %s"
                % (device_id, cfg["profile"], target.name, follow), device_id=device_id, port=args.port)
    return 0


class OnlineWatch:
    """Watch dev/<id>/status as the gateway user for a live "online": published by the
    self-test's connection, then by the agent once it has started with its credentials.
    Retained messages are the past and are ignored."""

    def __init__(self, cfg: dict, auth: acl.BrokerAuth) -> None:
        self.device_id = cfg["device_id"]
        self.online = False
        self.client = None
        self.why = ""
        self.event = threading.Event()
        self.t0 = time.monotonic()
        if not os.path.exists(os.path.join(auth.dir, "gateway.password")):
            self.why = "no gateway password in %s to watch the broker with" % auth.dir
            return
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edgectl-provision-%s" % os.getpid())
        c.username_pw_set(acl.GATEWAY_USER, auth.gateway_password())
        subscribed = threading.Event()
        c.on_connect = lambda cl, u, f, reason, p: (
            cl.subscribe("dev/%s/status" % self.device_id, 1) if not reason.is_failure else None)
        c.on_subscribe = lambda *a: subscribed.set()
        c.on_message = self._message
        try:
            c.connect(cfg["broker"]["host"], cfg["broker"]["port"], 30)
        except OSError as e:
            self.why = "this machine cannot reach the broker (%s)" % e
            return
        c.loop_start()
        if not subscribed.wait(5):
            c.loop_stop()
            self.why = "the broker did not let the gateway user subscribe from here"
            return
        self.client = c

    def _message(self, client, userdata, msg) -> None:
        if not msg.retain and msg.payload == b"online":
            self.online = True
            self.event.set()

    def seen(self, timeout: float) -> bool:
        return self.event.wait(timeout)

    def arm(self) -> None:
        """Forget what was seen so far: the next "online" is the agent's."""
        self.event.clear()
        self.online = False
        self.t0 = time.monotonic()

    def wait(self, timeout: float, step) -> str:
        if self.client is None:
            return "not confirmed: " + self.why
        while not self.event.wait(0.2):
            waited = time.monotonic() - self.t0
            if waited > timeout:
                raise StepFailed("the agent did not come online at the broker within %.0f s: follow its "
                                 "output with edgectl logs to see why" % timeout)
            step.progress(int(waited), int(timeout), "s waiting for the agent to connect")
        return "%s is online at the broker (%.1f s after the reset)" % (self.device_id, time.monotonic() - self.t0)

    def close(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()


def wifi_settings(args, spec: dict) -> dict | None:
    """{"ssid", "password"} for a board that joins Wi-Fi in its boot.py, or None."""
    if not args.wifi_ssid:
        return None
    if not spec.get("boot"):
        raise ProvisionError("--wifi-ssid: board %s does not use Wi-Fi" % spec["board"])
    if args.wifi_password_file:
        try:
            password = open(args.wifi_password_file).read().strip()
        except OSError as e:
            raise ProvisionError("--wifi-password-file: cannot read %s (%s)" % (args.wifi_password_file, e.strerror))
    else:
        import getpass
        password = getpass.getpass("Wi-Fi password for %s: " % args.wifi_ssid)
    return {"ssid": args.wifi_ssid, "password": password}
