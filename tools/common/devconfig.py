"""A device's config as `edgectl provision` builds it from the installer's flags, the board's
description and what the board already holds; checked against the agent's own schema
(edge/config.py), with errors that lead with the flag that sets the field.
"""
from __future__ import annotations

import argparse
import copy
import json

from edge import config as schema, line
from edge.reads import ROW
from tools.common import credentials as acl
from tools.common.report import StepFailed

# config path -> the flag that sets it, so a schema error names what the installer typed
FLAGS = {
    "device_id": "--device-id", "profile": "--profile", "bus.port": "--bus-port", "bus.baud": "--baud",
    "bus.parity": "--parity", "bus.stop": "--stop-bits", "bus.slave": "--slave",
    "bus.word_order": "--word-order", "bus.timeout_ms": "--timeout-ms", "bus.retries": "--retries",
    "bus.protocol": "--protocol", "bus.address": "--meter-address", "bus.meter_type": "--meter-type",
    "bus.di_order": "--di-order",
    "broker.host": "--broker", "broker.port": "--broker", "broker.ca": "--broker-ca",
}
CA_FILE = "ca.der"    # the site CA on the board, beside config.json (DER: what MicroPython's ssl loads)
PI_ETC = "/etc/citynet-edge"   # a Pi's config.json and ca.der; its agent reads the config as a systemd
                               # credential (boards/citynet-edge-agent.service), so the CA's path is absolute

class ProvisionError(Exception):
    """Bad input, found before anything is changed: exit status 2."""


def name_value(text: str) -> tuple[str, object]:
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


def build_config(args, existing: dict | None, device_id: str, secret: str, spec: dict, bus_port: str | None) -> dict:
    keep = {k: v for k, v in (existing or {}).items() if k not in ("device_id", "secret")}
    cfg = copy.deepcopy(keep)
    cfg["device_id"] = device_id
    cfg["secret"] = secret
    if args.profile:
        if args.profile != cfg.get("profile"):
            cfg.pop("map", None)    # another profile: its own map, unless --map gives one
        cfg["profile"] = args.profile
    if getattr(args, "map", None):
        # the map inlined (edge.config.validate checks it against the profile): a board
        # reads no map file
        from tools.common.rs485 import load_map
        try:
            cfg["map"] = load_map(args.map)
        except schema.ConfigError as e:
            raise StepFailed("--map: %s" % e) from None
    bus = cfg.setdefault("bus", {})
    if args.parity is not None and args.stop_bits is None:
        bus.pop("stop", None)    # a new parity: the stop bits follow it again (edge/line.py)
    if getattr(args, "protocol", None) is not None and args.protocol != bus.get("protocol", line.PROTOCOLS[0]):
        # another protocol: the other one's settings go, its default baud rate comes
        for key in ("address", "meter_type", "di_order", "valve_control", "baud", "slave", "word_order"):
            bus.pop(key, None)
    for key, flag in (("baud", "baud"), ("parity", "parity"), ("stop", "stop_bits"), ("slave", "slave"),
                      ("word_order", "word_order"), ("timeout_ms", "timeout_ms"), ("retries", "retries"),
                      ("protocol", "protocol"), ("address", "meter_address"), ("meter_type", "meter_type"),
                      ("di_order", "di_order")):
        if getattr(args, flag, None) is not None:
            bus[key] = getattr(args, flag)
    if bus.get("protocol") == line.PROTOCOLS[1]:
        cfg.pop("map", None)     # a CJ/T 188 meter's reply is the standard's: no register map
    if bus_port:
        bus["port"] = bus_port
    # the board's wiring and flash (UART pins, DE/RE, watchdog, outbox size) go in
    # wherever the schema has a place for them
    for key, value in spec.get("uart", {}).items():
        if "bus." + key in schema.SCHEMA:
            bus.setdefault(key, value)
    board_values = (("watchdog_ms", spec.get("watchdog_ms")), ("outbox.kb", spec.get("flash", {}).get("outbox_kb")))
    for path, value in board_values:
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
    if args.broker_ca:
        broker.update(tls=True, ca=PI_ETC + "/" + CA_FILE if spec["port"] == "cpython" else CA_FILE)
        broker.pop("insecure_plain", None)
        if not args.broker or ":" not in args.broker:
            broker.setdefault("port", 8883)
    elif args.insecure_plain_mqtt:
        broker["insecure_plain"] = True
    broker["user"] = device_id
    broker["password"] = acl.device_password(secret)
    for key, value in args.site:
        cfg.setdefault("site", {})[key] = value
    for key, value in args.param:
        cfg.setdefault("params", {})[key] = value
    return cfg


def board_map(m: dict) -> dict:
    """A checked map as a board's config carries it: what the agent decodes with, its
    model and confidence, without units, notes, sources and test vectors, each field a
    row (edge.reads.ROW: every byte of the config is parsed on the board's heap at
    start-up, and a row takes a third of an object's)."""
    fields = [[f.get(k) for k in ROW] for f in m["fields"]]
    out = {k: m[k] for k in ("model", "confidence") if m.get(k)}
    return dict(out, slaves=m["slaves"], fields=fields, writable=m["writable"])


def config_version(cfg: dict) -> str:
    """The version of a device's config, as the gateway's registry records it and its
    status page shows it: 12 hex digits of the SHA-256 of its canonical JSON, the secret
    left out (a new key is no new config). A device does not report its config, so the
    page says what the installer last gave it."""
    import hashlib
    body = json.dumps({k: v for k, v in cfg.items() if k != "secret"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def validate(cfg: dict) -> dict:
    # what the profile cannot run without, all at once rather than one per attempt
    missing = [p for p in schema.PROFILE_REQUIRES.get(cfg.get("profile"), ())
               if p.partition(".")[2] not in (cfg.get(p.partition(".")[0]) or {})]
    if len(missing) > 1:
        raise StepFailed("the %s profile needs %s" % (cfg["profile"], " and ".join(
            "--site %s=VALUE (%s)" % (p.partition(".")[2], schema.SCHEMA[p][3]) for p in missing)))
    checked = schema.validate(copy.deepcopy(cfg))
    if checked.get("map") is not None:           # none for a CJ/T 188 meter
        checked["map"] = board_map(checked["map"])
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
