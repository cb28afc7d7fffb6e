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
import os
import shutil

from edge import config as schema
from edge import ids, line, regmap
from edge.profiles import NAMES
from tools.common import credentials as acl
from tools.common import boards
from tools.testbench import vboard
from tools.common.checks import OnlineWatch, judge
from tools.common.deploy import LocalTarget, MpremoteTarget, Target, build_agent, files_for
from tools.common.devconfig import (ProvisionError, build_config, config_version, explain_config_error, name_value,
                                    validate, wifi_settings)
from tools.common.report import Reporter, StepFailed

STEPS = 8
PROFILES = NAMES
def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    ap.epilog = ("examples:\n"
                 "  edgectl provision --board virtual --device-id elev-demo --profile elevator \\\n"
                 "      --site rated_speed=1.0 --site floors=-1,12\n"
                 "      (starts a virtual board with a simulated elevator in ./virtual-board)\n"
                 "  edgectl provision --board esp32-devkitc --port /dev/ttyUSB0 --device-id elev-b7-1 \\\n"
                 "      --profile elevator --slave 3 --baud 19200 --broker 192.168.1.10 \\\n"
                 "      --site rated_speed=1.75 --site floors=-2,18\n"
                 "  edgectl provision --board esp32-devkitc --port /dev/ttyUSB0\n"
                 "      (again: keeps identity and settings)\n"
                 "what each error means: docs/install.md")
    g = ap.add_argument_group("board")
    g.add_argument("--board", required=True, choices=boards.known_boards(), help="the board (boards/*.json)")
    g.add_argument("--port", help="the board's serial console, e.g. /dev/ttyUSB0; for --board virtual, "
                                  "omit it to start a virtual board in --virtual-dir")
    g.add_argument("--virtual-dir", default=vboard.DEFAULT_VIRTUAL_DIR,
                   help="where the virtual board lives (default: %(default)s)")
    g.add_argument("--root", default="/", help="raspberry-pi only: install under this root (default: /)")
    g.add_argument("--wifi-ssid", help="ESP32: the site's Wi-Fi network (kept on the board in wifi.json)")
    g.add_argument("--wifi-password-file", metavar="FILE",
                   help="ESP32: a file holding the Wi-Fi password (default: asked for, not echoed)")
    g = ap.add_argument_group("identity")
    g.add_argument("--device-id", help="the device's id (a fresh board needs one; a provisioned board keeps its own)")
    g.add_argument("--rotate", action="store_true", help="give the device a new secret (and broker password); the "
                                                         "gateway accepts the old one for 7 days more")
    g.add_argument("--no-grace", action="store_true", help="with --rotate: refuse the old secret at once (it leaked)")
    g = ap.add_argument_group("sensor")
    g.add_argument("--profile", choices=PROFILES, help="what the sensor is")
    g.add_argument("--bus-port", help="the sensor's serial port as the board sees it")
    g.add_argument("--baud", type=int, help="baud rate (default %d)" % line.BAUD)
    g.add_argument("--parity", choices=line.PARITIES, help="parity (default %s)" % line.PARITY)
    g.add_argument("--stop-bits", type=int, choices=(1, 2), help="stop bits (default 1, or 2 without parity)")
    g.add_argument("--slave", type=int, help="Modbus slave id, 1..247 (default 1)")
    g.add_argument("--protocol", choices=line.PROTOCOLS,
                   help="the sensor's bus protocol: modbus (default), or cjt188 for a CJ/T 188 household water"
                        " meter (2400 8E1 by default; docs/cjt188.md)")
    g.add_argument("--meter-address", metavar="DIGITS",
                   help="cjt188: the meter's address, 14 digits as on its label (maker, then meter number); "
                        "edgectl scan --protocol cjt188 finds it")
    g.add_argument("--meter-type", type=lambda v: int(v, 0), metavar="T",
                   help="cjt188: the meter type, e.g. 0x10 cold water (the default)")
    g.add_argument("--di-order", type=int, choices=(2004, 2018),
                   help="cjt188: the data identifier's byte order the meter expects: 2004 (90 1F, the default) "
                        "or 2018 (1F 90)")
    g.add_argument("--map", help="the sensor's register map: a shipped map's name (edge/maps) or a map file "
                                 "(default: the profile's); put into the board's config")
    g.add_argument("--word-order", choices=regmap.ORDERS,
                   help="order of the bytes of 32-bit values (default: the map's, else ABCD)")
    g.add_argument("--timeout-ms", type=int, help="reply timeout (default 300)")
    g.add_argument("--retries", type=int, help="retries per poll (default 2)")
    g.add_argument("--site", type=name_value, action="append", default=[], metavar="NAME=VALUE",
                   help="installation facts, e.g. rated_speed=1.75, floors=-2,18, occupants=1")
    g.add_argument("--param", type=name_value, action="append", default=[], metavar="NAME=VALUE",
                   help="threshold override, e.g. door_open_moving_s=3 (names: docs/filters.md)")
    g = ap.add_argument_group("gateway")
    g.add_argument("--broker", metavar="HOST[:PORT]",
                   help="the broker as the board reaches it; for --board virtual, omit it to run a "
                        "sandbox broker (edgectl broker) from the --broker-auth directory")
    g.add_argument("--broker-ca", metavar="FILE",
                   help="the CA certificate (PEM) that signed the broker's: the board connects with TLS and"
                        " checks the broker against it (port 8883 unless --broker gives one; docs/tls.md)")
    g.add_argument("--insecure-plain-mqtt", action="store_true",
                   help="plain MQTT to a broker that is not on the board itself: its password and events"
                        " cross the network in clear")
    g.add_argument("--gateway-data", default="gateway-data",
                   help="the gateway's data directory: devices.json (default: %(default)s)")
    g.add_argument("--broker-auth", metavar="DIR",
                   help="mosquitto password and ACL files (default: GATEWAY_DATA/mosquitto)")
    g = ap.add_argument_group("output")
    g.add_argument("--build-dir", default="build", help="where the compiled agent goes (default: %(default)s)")
    g.add_argument("--json", action="store_true", help="one JSON object per step, and a summary, on stdout")


# ---------------------------------------------------------------- steps
def check_device_id(device_id: str) -> None:
    try:
        ids.check(device_id)
    except ValueError as e:
        raise ProvisionError("--device-id: %s" % e) from None


def choose_identity(args, existing: dict | None, registry) -> tuple[str, str, str]:
    """(device_id, secret, how): the board's own identity unless told otherwise."""
    board_id = (existing or {}).get("device_id")
    device_id = args.device_id or board_id
    if not device_id:
        raise ProvisionError("this board has no identity yet: give it one with --device-id NAME "
                             "(%s; e.g. elev-b7-1)" % ids.RULE)
    check_device_id(device_id)
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
    from gateway.registry import GRACE_S, Registry, RegistryError
    from gateway.store import last_boot
    spec = boards.load_board(args.board)
    if args.device_id:
        check_device_id(args.device_id)     # before a sandbox board or broker is started for it
    if args.broker_ca:
        try:
            acl.der_certificate(args.broker_ca)
        except ValueError as e:
            raise ProvisionError("--broker-ca %s" % e) from None
    wifi = wifi_settings(args, spec)
    bus_port = args.bus_port
    if spec["port"] == "cpython":
        target: Target = LocalTarget(args.root, spec)
    else:
        if not args.port:
            if args.board != "virtual":
                raise ProvisionError("give the board's serial port with --port (e.g. /dev/ttyUSB0; "
                                     "ls /dev/ttyUSB* /dev/ttyACM* lists them)")
            if not vboard.info(args.virtual_dir):
                rep.note("starting a virtual board with a simulated %s in %s (stop it with: edgectl board "
                         "stop --dir %s)" % (args.profile or "elevator", args.virtual_dir, args.virtual_dir))
            vb = vboard.start_virtual(args.virtual_dir, sensor=args.profile or "elevator")
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
        # the boot counter goes on above the last boot the gateway has seen: a board whose
        # flash was erased (edgectl flash) would start again at 1 and reuse event ids
        floor = max(cfg.get("boot_floor", 0), last_boot(args.gateway_data, device_id))
        if floor:
            cfg["boot_floor"] = floor
        try:
            cfg = validate(cfg)
        except schema.ConfigError as e:
            raise StepFailed(explain_config_error(e)) from None
        b = cfg["bus"]
        st.done("%s, slave %d on %s at %d %d%s%d, word order %s; broker %s:%d%s" % (
            cfg["profile"], b["slave"], b["port"], b["baud"], 8, b["parity"], b["stop"],
            b.get("word_order") or "the map's",
            cfg["broker"]["host"], cfg["broker"]["port"], "; boot counter above %d" % floor if floor else ""),
            profile=cfg["profile"], boot_floor=floor)

    with rep.step("gateway", "registering with the gateway") as st:
        try:
            known = registry.get(device_id)
            registry.add(device_id, cfg["profile"], secret, replace=True, board=args.board,
                         config=config_version(cfg), params=cfg.get("params") or {},
                         grace_s=0 if args.no_grace else GRACE_S)
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
        files = files_for(out, spec, cfg, wifi, args.broker_ca)
        try:
            copied = target.deploy(files[0], st.progress)
        finally:
            shutil.rmtree(files[1], ignore_errors=True)
        st.done("%d files on %s, %d changed (config.json holds the secret)" % (len(files[0]), target.name, copied),
                files=len(files[0]), changed=copied)

    # watch the device's status topic as the gateway from here on: what the board
    # publishes with its new credentials must reach the gateway's user
    watch = OnlineWatch(cfg, auth, args.broker_ca)
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


