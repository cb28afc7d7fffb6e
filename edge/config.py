# Device configuration: declared as a table, checked before anything runs. Every error
# names the field and what is allowed, so an installer can fix it from the message.
import json

from edge import ids, line, regmap
from edge.profiles import NAMES as PROFILES


class ConfigError(ValueError):
    pass


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


SECRET_RULE = "an even number of hex digits, at least 32 (16 bytes)"


def is_secret(v):
    """A device secret: SECRET_RULE (also the gateway registry's). bytes.fromhex alone
    would take spaces: 40 of them make an empty key."""
    if not isinstance(v, str) or len(v) < 32 or len(v) % 2:
        return False
    for c in v.encode():   # bytes: a board interns every one-character str it iterates over
        if not (48 <= c <= 57 or 97 <= c <= 102 or 65 <= c <= 70):   # 0-9 a-f A-F
            return False
    return True


def _slaves(v):
    return (isinstance(v, list) and len(v) > 0 and all(_is_int(s) and 1 <= s <= 247 for s in v)
            and len(set(v)) == len(v))


def _night(v):
    ok = isinstance(v, list) and len(v) == 2
    for hm in v if ok else ():
        h, _, m = hm.partition(":") if isinstance(hm, str) else ("", "", "")
        ok = ok and h.isdigit() and m.isdigit() and int(h) < 24 and int(m) < 60
    return ok


def _floors(v):
    return (isinstance(v, list) and len(v) == 2 and _is_int(v[0]) and _is_int(v[1])
            and v[0] < v[1])


# path: (kind, default or REQUIRED, check, what the check allows); a check returns
# False, or raises ValueError with its own message naming what is wrong
REQUIRED = object()
SCHEMA = {
    "device_id": ("str", REQUIRED, ids.check, ids.RULE),
    "secret": ("str", REQUIRED, is_secret, SECRET_RULE + "; edgectl provision makes one"),
    # the last boot the gateway saw from this device: the boot counter starts above it
    # (edgectl provision writes it, so an erased flash never reuses an event id)
    "boot_floor": ("int", 0, lambda v: 0 <= v < 0xFFFFFFFF, "0..4294967294"),
    "profile": ("str", REQUIRED, PROFILES, None),
    "bus.port": ("str", REQUIRED, None, None),
    # default modbus; cjt188: a CJ/T 188 water meter (docs/cjt188.md), whose address,
    # type and DI order are checked by _check_cjt188
    "bus.protocol": ("str", None, line.PROTOCOLS, None),
    # default: the protocol's (edge.line.baud), filled in by validate()
    "bus.baud": ("int", None, line.BAUDS, None),
    "bus.parity": ("str", line.PARITY, line.PARITIES, None),
    # default: the parity's (edge.line.stop_bits), filled in by validate()
    "bus.stop": ("int", None, (1, 2), None),
    "bus.slave": ("int", 1, lambda v: 1 <= v <= 247, "a slave id, 1..247"),
    # a multi-probe profile (water_quality): the probes' slave ids, in its SLAVES order
    "bus.slaves": ("any", None, _slaves, "a list of distinct slave ids, 1..247"),
    # the order of 32-bit values; given, it overrides the map's (default: the map's, else ABCD)
    "bus.word_order": ("str", None, regmap.ORDERS, None),
    "bus.timeout_ms": ("int", 300, lambda v: 20 <= v <= 5000, "milliseconds, 20..5000"),
    "bus.retries": ("int", 2, lambda v: 0 <= v <= 5, "resends of a poll, 0..5"),
    # a CJ/T 188 meter's (docs/cjt188.md), also checked by edge.cjt188.check: its 14
    # digits, type (default 0x10, cold water), DI byte order (2004 or 2018, default
    # 2004), and whether edgectl may build valve commands for it (edge/cjt188_tools.py;
    # a board never sends one)
    "bus.address": ("str", None, None, None),
    "bus.meter_type": ("int", None, lambda v: 0x10 <= v <= 0x49, "a meter type, 16..73 (16: cold water)"),
    "bus.di_order": ("int", None, None, None),
    "bus.valve_control": ("bool", None, None, None),
    # ESP32 wiring (boards/esp32-*.json): the UART, its pins and the RS-485 DE/RE pin
    "bus.uart_id": ("int", None, (1, 2), None),
    "bus.tx": ("int", None, lambda v: 0 <= v <= 48, "a GPIO number, 0..48"),
    "bus.rx": ("int", None, lambda v: 0 <= v <= 48, "a GPIO number, 0..48"),
    "bus.de_pin": ("int", None, lambda v: 0 <= v <= 48, "a GPIO number, 0..48"),
    "broker.host": ("str", REQUIRED, None, None),
    "broker.port": ("int", 1883, lambda v: 1 <= v <= 65535, "a TCP port, 1..65535"),
    "broker.user": ("str", None, None, None),
    "broker.password": ("str", None, None, None),
    "broker.keepalive": ("int", 60, lambda v: 10 <= v <= 3600, "seconds, 10..3600"),
    # TLS to the broker (docs/tls.md): ca is the file (DER) of the CA that signed the
    # broker's certificate, beside the config file; plain MQTT only to a loopback broker
    # or with insecure_plain
    "broker.tls": ("bool", False, None, None),
    "broker.ca": ("str", None, None, None),
    "broker.insecure_plain": ("bool", False, None, None),
    "site.rated_speed": ("num", None, lambda v: 0 < v <= 20, "a speed in m/s, 0..20"),
    "site.floors": ("any", None, _floors, "[lowest, highest], integers, lowest < highest"),
    "site.resolution": ("num", 0.001, lambda v: 0 < v <= 1, "m3 per count, e.g. 0.001"),
    "site.occupants": ("int", 1, lambda v: 1 <= v <= 20, "people, 1..20"),
    # water quality: the GB 3838-2002 class the station's water must meet, and limits
    # that override the table in edge/detect/water_quality.py ({"III": {"nh3n_max": 1.0}})
    "site.class": ("any", None, lambda v: not isinstance(v, bool) and v in WQ_CLASSES, "I, II, III, IV or V (or 1..5)"),
    "site.standard": ("str", None, None, None),
    "site.limits": ("dict", None, None, None),
    # noise: the night hours and limit the local government sets (GB 12523: 22:00-06:00, 55)
    "site.night": ("any", None, _night, '["HH:MM", "HH:MM"], e.g. ["22:00", "06:00"]'),
    "site.night_limit_dba": ("num", None, lambda v: 30 <= v <= 90, "dB(A), 30..90"),
    # structure: the alarm values of the monitoring plan
    "site.vib_limit_mm_s": ("num", None, lambda v: 0 < v <= 100, "mm/s, 0..100"),
    "site.tilt_limit_deg": ("num", None, lambda v: 0 < v <= 10, "degrees, 0..10"),
    "site.settle_limit_mm": ("num", None, lambda v: 0 < v <= 500, "millimetres, 0..500"),
    "utc_offset_s": ("int", 28800, lambda v: -50400 <= v <= 50400, "-50400..50400 (China: 28800)"),
    "telemetry": ("bool", True, None, None),
    # a console line for every telemetry event too, not only alarms and reports (tests
    # count what an agent generated from it; technicians can follow it with edgectl logs)
    "log_telemetry": ("bool", False, None, None),
    # events kept on flash while the broker is away (docs/outbox.md); watchdog_ms 0: none
    "outbox.kb": ("int", 64, lambda v: 8 <= v <= 4096, "8..4096 (KiB of flash)"),
    "outbox.segment_kb": ("int", 4, lambda v: 1 <= v <= 64, "1..64 (KiB per segment file)"),
    "watchdog_ms": ("int", 0, lambda v: v == 0 or 5000 <= v <= 600000, "0 (none) or 5000..600000"),
    "params": ("dict", None, None, None),
    # the register map: a shipped map's name (edge/maps/NAME.json) or the map itself
    # (docs/register-maps.md); default: the profile's. Checked by edge.mapcheck, and
    # filled in resolved (edgectl provision inlines it, so a board reads no map file)
    "map": ("any", None, None, None),
    # demos and tests only: run the device clock `speed` times faster than real time,
    # reading `origin` (unix s) at real time `anchor`, so an accelerated simulated
    # sensor and the agent agree on the trace's time
    "clock.anchor": ("num", None, None, None),
    "clock.origin": ("num", None, None, None),
    "clock.speed": ("num", None, lambda v: 0 < v <= 10000, "times real time, 0..10000"),
}
# installation facts a profile cannot run without
PROFILE_REQUIRES = {"elevator": ("site.rated_speed", "site.floors"), "water_quality": ("site.class",)}
WQ_CLASSES = ("I", "II", "III", "IV", "V", 1, 2, 3, 4, 5)
KINDS = {"str": (str,), "int": (int,), "num": (int, float), "bool": (bool,), "dict": (dict,), "list": (list,)}
KNOWN_SECTIONS = ("bus", "broker", "site", "clock", "outbox")


def _get(cfg, path):
    node = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None, False
        node = node[part]
    return node, True


def _set(cfg, path, value):
    parts = path.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def validate(cfg):
    """Check a config dict against SCHEMA, fill in defaults, return it. Raises ConfigError
    naming the first bad field."""
    if not isinstance(cfg, dict):
        raise ConfigError("config: must be a JSON object")
    for key in cfg:
        if key not in KNOWN_SECTIONS and key not in SCHEMA:
            raise ConfigError("config.%s: unknown field; known: %s" % (
                key, ", ".join(sorted(set([p.split(".")[0] for p in SCHEMA])))))
    for section in KNOWN_SECTIONS:
        node = cfg.get(section, {})
        if not isinstance(node, dict):
            raise ConfigError("config.%s: must be an object" % section)
        for key in node:
            if section + "." + key not in SCHEMA:
                raise ConfigError("config.%s.%s: unknown field; known: %s" % (section, key, ", ".join(
                    sorted([p.split(".")[1] for p in SCHEMA if p.startswith(section + ".")]))))
    profile = cfg.get("profile")
    required = PROFILE_REQUIRES.get(profile, ()) if isinstance(profile, str) else ()
    for path in SCHEMA:
        kind, default, check, allowed = SCHEMA[path]
        value, present = _get(cfg, path)
        if not present or value is None:
            if default is REQUIRED or path in required:
                raise ConfigError("config.%s: required field is missing" % path)
            if default is not None:
                _set(cfg, path, default)
            continue
        _check_value("config." + path, value, kind, check, allowed)
    bus = cfg["bus"]
    bus["stop"] = line.stop_bits(bus["parity"], bus.get("stop"))
    bus["baud"] = bus.get("baud") or line.baud(bus.get("protocol"))
    _check_tls(cfg["broker"])
    if bus.get("protocol") == line.PROTOCOLS[1]:
        # its framing loaded, and its fields checked, only for a CJ/T 188 meter
        from edge import cjt188
        try:
            cjt188.check(bus, profile)
        except ValueError as e:
            raise ConfigError("config." + str(e))
    elif "address" in bus:
        raise ConfigError("config.bus.address: a CJ/T 188 meter's, only with bus.protocol cjt188")
    else:
        _check_map(cfg, profile, bus)
    return cfg


def _check_map(cfg, profile, bus):
    # the map's schema and the shipped maps (edge/mapcheck.py) are the laptop's, where
    # edgectl provision checks the map it puts in a board's config: a board is not sent
    # them (their code alone would split its heap)
    try:
        from edge import mapcheck
    except ImportError:
        if not isinstance(cfg.get("map"), dict):
            raise ConfigError("config.map: no register map in the config; edgectl provision puts it there")
        return
    m = cfg["map"] = mapcheck.profile_map(profile, cfg.get("map"), "config.map")
    if len(bus.get("slaves") or m["slaves"]) < len(m["slaves"]):
        raise ConfigError("config.bus.slaves: %d slave ids for the %d probes of the map" % (
            len(bus["slaves"]), len(m["slaves"])))


def _check_value(where, value, kind, check, allowed):
    if kind != "any" and (not isinstance(value, KINDS[kind])
                          or (kind in ("int", "num") and isinstance(value, bool))):
        raise ConfigError("%s: must be %s, got %r" % (where, kind, value))
    if check is None:
        return
    if isinstance(check, tuple):
        if value not in check:
            raise ConfigError("%s: %r is not one of %s" % (where, value, ", ".join([str(c) for c in check])))
        return
    try:
        ok = check(value)
    except ValueError as e:
        raise ConfigError("%s: %s" % (where, e))
    if not ok:
        raise ConfigError("%s: %r is not allowed; expected %s" % (where, value, allowed))


def is_loopback(host):
    """localhost, ::1 or an IPv4 address in 127.0.0.0/8 (not a name that starts with 127.):
    the only brokers plain MQTT may go to (the gateway's rule too)."""
    if host in ("localhost", "::1"):
        return True
    parts = host.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() and int(p) < 256 for p in parts)


def _check_tls(broker):
    host = broker["host"]
    if broker["tls"]:
        if not broker.get("ca"):
            raise ConfigError("config.broker.ca: required with broker.tls: the CA certificate (DER) that signed"
                              " the broker's (edgectl provision --broker-ca FILE puts it on the board)")
    elif not (broker["insecure_plain"] or is_loopback(host)):
        raise ConfigError("config.broker.host: %s is not this machine, and plain MQTT would send the password"
                          " and every event in clear: set broker.tls true and broker.ca (edgectl provision"
                          " --broker-ca FILE), or broker.insecure_plain true on a network you trust" % host)


def load(path, cfg=None):
    """The config file checked; cfg: its JSON already parsed (edge.boot does it)."""
    if cfg is None:
        try:
            with open(path) as f:
                text = f.read()
        except (OSError, ValueError) as e:   # ValueError: not UTF-8
            raise ConfigError("%s: cannot read the config file (%s); re-run edgectl provision to rewrite it" % (
                path, e))
        try:
            cfg = json.loads(text)
        except ValueError as e:
            raise ConfigError("%s: not valid JSON (%s); re-run edgectl provision to rewrite it" % (path, e))
    cfg = validate(cfg)
    ca = cfg["broker"].get("ca")
    if ca:
        # beside the config file, as provisioning puts it
        folder = path.rpartition("/")[0]
        if folder and not ca.startswith("/"):
            ca = cfg["broker"]["ca"] = folder + "/" + ca
        try:
            open(ca, "rb").close()
        except (OSError, ValueError) as e:   # ValueError: a NUL or a lone surrogate in the name
            raise ConfigError("config.broker.ca: cannot read %s (%s); edgectl provision --broker-ca FILE puts"
                              " it beside the config" % (ca, e))
    return cfg
