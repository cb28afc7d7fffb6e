# `edge-gateway`: run the gateway, run the reference platform receiver, manage the
# device registry. Every error a user can cause ends in one line saying what is wrong
# and what to do, and exit status 2; no traceback.
from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import logging
import json
import signal
import sys
from pathlib import Path

from edge import ids
from gateway.broker import (INSECURE_FLAG, PASSWORD_ENV, BrokerError, broker_password, describe_os_error,
                            is_loopback, parse_broker_url, parse_listen, read_password_file)
from gateway import auth, jsonlog, login
from gateway.hj212 import OVERTIME_S, RECOUNT, VERSIONS as VERSIONS_212
from gateway.hj212_uplink import Hj212Config, parse_mn
from gateway.http import check_transport, client_tls
from gateway.maintenance import KINDS
from gateway.registry import FILENAME, GRACE_S, PROFILES, Registry, RegistryError, check_profile
from gateway.mqtt import VERSIONS
from gateway.service import EMBEDDED, GatewayConfig, run_gateway
from gateway.status import StatusError, exposure
from gateway.streams import DEFAULT_STREAMS, StreamError, apply_options
from gateway.supervision import INTERVAL_DAYS

log = logging.getLogger("gateway")

DEFAULT_DATA = "gateway-data"
EXIT_USAGE = 2


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


# ---- subcommands --------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    broker = args.broker
    if broker != EMBEDDED:
        parse_broker_url(broker, None, args.broker_ca, args.insecure_plain_mqtt)   # BrokerError: one line
    elif args.broker_ca or args.broker_password_file:
        raise CliError("--broker-ca and --broker-password-file are for an external broker (--broker mqtts://...);"
                       " the embedded broker checks the devices against %s" % FILENAME)
    if args.max_db_mb is not None and args.max_db_mb <= 0:
        raise CliError("--max-db-mb %s: give a size in MB above 0, or leave it out for no quota"
                       % args.max_db_mb)
    if args.upload_timeout <= 0 or args.retention_days < 0 or args.maintenance_interval_days <= 0:
        raise CliError("--upload-timeout and --maintenance-interval-days must be above 0 and --retention-days"
                       " at least 0")
    try:
        check_transport(args.platform, args.insecure_plain_http)
    except ValueError as e:
        raise CliError("--platform %s" % e) from None
    if args.platform_ca:
        try:
            client_tls(args.platform_ca)
        except (OSError, ValueError) as e:     # ssl.SSLError is an OSError
            raise CliError("--platform-ca %s: not a CA certificate file (PEM) that loads: %s"
                           % (args.platform_ca, e)) from None
    if args.status_listen:
        # before anything starts: a page that would be open to the network is an error now
        exposure(parse_listen(args.status_listen, 8081)[0], args.status_logins, args.status_cert,
                 args.status_key, args.insecure_plain_status)
    elif args.status_logins or args.status_cert:
        raise CliError("--status-logins and --status-cert are for the status page: give --status-listen HOST:PORT")
    streams = apply_options(DEFAULT_STREAMS, args.stream)
    hj212 = hj212_config(args)
    # last: a missing credentials file is the error to fix after the options are right
    credentials = Path(args.platform_credentials or Path(args.data) / auth.FILENAME)
    creds = auth.Credentials.load(credentials)         # CredentialsError: one line
    gateway_id = args.gateway_id or creds.gateway
    cfg = GatewayConfig(data_dir=Path(args.data), platform_url=args.platform, broker=broker,
                        broker_ca=args.broker_ca, broker_password=broker_password(args.broker_password_file),
                        insecure_plain_mqtt=args.insecure_plain_mqtt,
                        listen=args.listen, gateway_id=gateway_id, client_id=args.client_id,
                        platform_credentials=credentials, platform_ca=args.platform_ca,
                        insecure_plain_http=args.insecure_plain_http,
                        share_group=args.share_group, mqtt_version=args.mqtt_version,
                        streams=streams,
                        upload_timeout=args.upload_timeout, max_db_mb=args.max_db_mb,
                        retention_days=args.retention_days, status_listen=args.status_listen,
                        status_logins=args.status_logins, status_cert=args.status_cert,
                        status_key=args.status_key, insecure_plain_status=args.insecure_plain_status,
                        hj212=hj212, maintenance_interval_days=args.maintenance_interval_days)
    return asyncio.run(run_gateway(cfg))


def hj212_config(args: argparse.Namespace) -> Hj212Config | None:
    """The HJ 212 uplink's settings, checked; None when --hj212 is not given."""
    if not args.hj212:
        if args.hj212_mn:
            raise CliError("--hj212-mn is for the HJ 212 uplink: give --hj212 HOST:PORT")
        return None
    host, port = parse_listen(args.hj212, 0)
    if not port:
        raise CliError("--hj212 %s: give HOST:PORT" % args.hj212)
    try:
        mn = parse_mn(args.hj212_mn)
    except ValueError as e:
        raise CliError("--hj212-mn %s" % e) from None
    if not 0 < args.hj212_overtime <= 99 or not 0 <= args.hj212_recount <= 99:
        raise CliError("--hj212-overtime must be 1..99 s and --hj212-recount 0..99 (HJ 212-2017 Table 4)")
    if not (args.insecure_plain_hj212 or is_loopback(host)):
        raise CliError("--hj212 %s: HJ 212-2017 has no encryption: the access password and every reading would"
                       " cross the network in clear; send it over a VPN or a private APN and give"
                       " --insecure-plain-hj212 to say so" % args.hj212)
    if not args.hj212_password_file:
        raise CliError("--hj212 needs --hj212-password-file FILE: the access password (PW, 6 characters) the"
                       " environmental platform gave this site, in a file only this user can read")
    try:
        password = read_password_file(args.hj212_password_file, "--hj212-password-file")
    except BrokerError as e:
        raise CliError(str(e)) from None
    if len(password) != 6:
        raise CliError("--hj212-password-file %s: the password must be 6 characters (HJ 212-2017 Table 3)"
                       % args.hj212_password_file)
    return Hj212Config("%s:%d" % (host, port), password, mn, args.hj212_version,
                       args.hj212_overtime, args.hj212_recount)


def cmd_platform(args: argparse.Namespace) -> int:
    from gateway.platform import PlatformServer   # aiohttp: not in the gateway's own process
    host, port = parse_listen(args.listen, 8080)

    async def serve() -> int:
        if bool(args.cert) != bool(args.key):
            raise CliError("--cert and --key go together: the certificate (PEM) and its private key")
        try:
            server = PlatformServer(args.db, host, port, echo=sys.stdout if args.print else None,
                                    tls=(args.cert, args.key) if args.cert else None)
        except OSError as e:                   # ssl.SSLError is an OSError
            raise CliError("--cert %s --key %s: %s" % (args.cert, args.key, e)) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start()
        except OSError as e:
            raise CliError("cannot listen on %s:%d: %s; pick another --listen HOST:PORT"
                           % (host, port, describe_os_error(e))) from e
        hj = None
        if args.hj212_listen:
            from gateway.hj212_platform import Hj212Server
            hj = Hj212Server(args.db, *parse_listen(args.hj212_listen, 0))
            await hj.start()
        try:
            await stop.wait()
        finally:
            if hj is not None:
                await hj.stop()
            await server.stop()
        return 0
    return asyncio.run(serve())


def cmd_platform_add_gateway(args: argparse.Namespace) -> int:
    from gateway.platform import PlatformDB
    out = Path(args.out or "%s.%s" % (args.gateway_id, auth.FILENAME))
    db = PlatformDB(args.db)
    try:
        creds = db.add_gateway(args.gateway_id, args.replace)
    except ValueError as e:
        raise CliError(str(e)) from None
    finally:
        db.close()
    creds.save(out)
    print("gateway %s %s in %s; its credentials are in %s (mode 0600, the secret is not shown): copy the file"
          " to the gateway and run it with --platform-credentials FILE"
          % (args.gateway_id, "given a new secret" if args.replace else "added", args.db, out))
    return 0


def cmd_platform_import_keys(args: argparse.Namespace) -> int:
    from gateway.platform import PlatformDB
    data = auth.read_private_json(args.file)
    keys = {}
    for device, entry in data.items() if isinstance(data, dict) else ():
        entry = entry if isinstance(entry, dict) else {}
        previous = entry.get("previous") if isinstance(entry.get("previous"), dict) else {}
        try:
            ids.check(device)
            for secret in (entry.get("secret"), previous.get("secret", "00" * 16)):
                if not isinstance(secret, str) or len(bytes.fromhex(secret)) < 16:
                    raise ValueError("secret: expected at least 32 hex digits")
            if previous and not isinstance(previous.get("until"), (int, float)):
                raise ValueError("previous.until: expected the unix time until which the previous key is good")
        except ValueError as e:
            raise CliError("%s: device %r: %s" % (args.file, device[:64], e)) from None
        keys[device] = (entry["secret"], previous.get("secret"), previous.get("until"))
    if not keys:
        raise CliError('%s: no device keys; expected {"<device>": {"secret": "<hex>"}, ...} as'
                       " `edge-gateway devices export-keys` writes it" % args.file)
    db = PlatformDB(args.db)
    try:
        db.import_keys(keys)
    finally:
        db.close()
    print("imported the keys of %d devices into %s: their events' MACs are checked from now on; delete %s"
          % (len(keys), args.db, args.file))
    return 0


def cmd_platform_verify(args: argparse.Namespace) -> int:
    from gateway.platform import PlatformDB
    if not Path(args.db).is_file():
        raise CliError("--db %s: no such file" % args.db)
    db = PlatformDB(args.db)
    try:
        records, problems = db.verify_chains()
    finally:
        db.close()
    for problem in problems:
        print(problem)
    print("%s: %d records, %s" % (args.db, records, "%d problems: the records were tampered with" % len(problems)
                                  if problems else "every device's chain intact"))
    return 1 if problems else 0


def cmd_status_login_add(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password for %s: " % args.name)
        if getpass.getpass("again: ") != password:
            raise CliError("the two passwords differ; nothing was changed")
    else:
        # from a pipe, so the password stays out of the shell history and `ps`
        password = sys.stdin.readline().rstrip("\n")
    replaced = login.add(args.file, args.name, password)
    print("%s login %s in %s (mode 0600; only a scrypt hash of the password is kept); the gateway reads it"
          " at start: edge-gateway run --status-logins %s" % ("replaced" if replaced else "added", args.name,
                                                           args.file, args.file))
    return 0


def cmd_platform_review(args: argparse.Namespace) -> int:
    from gateway.platform import PlatformDB
    if not Path(args.db).is_file():
        raise CliError("--db %s: no such file" % args.db)
    if args.days < 1:
        raise CliError("--days %d: give a number of days of at least 1" % args.days)
    db = PlatformDB(args.db)
    try:
        devices = db.review(args.days)
    finally:
        db.close()
    print("devices worst first over %d days: false-alarm rate, then alarms, then silence" % args.days)
    print("%-24s %7s %6s %6s %6s %10s %10s" % ("device", "alarms", "false", "conf.", "dup.", "false rate", "silent"))
    for d in devices:
        rate = "-" if d["false_rate"] is None else "%.0f %%" % (100 * d["false_rate"])
        print("%-24s %7d %6d %6d %6d %10s %10s" % (d["device"], d["alarms"], d["false"], d["confirmed"],
                                                   d["duplicate"], rate, _duration(d["silent_s"])))
    return 0


def _when(text: str, flag: str) -> int:
    """Unix seconds from unix seconds or an ISO 8601 time (local time unless it says)."""
    try:
        return int(text) if text.isdigit() else int(datetime.datetime.fromisoformat(text).timestamp())
    except ValueError:
        raise CliError("%s %s: give unix seconds or a time like 2026-11-20T09:00" % (flag, text)) from None


def cmd_platform_check_maintenance(args: argparse.Namespace) -> int:
    """Exit 0 when the claim is confirmed, 1 when it is not (no session, too short)."""
    from gateway.platform import PlatformDB
    if not Path(args.db).is_file():
        raise CliError("--db %s: no such file" % args.db)
    start, end = _when(args.start, "--start"), _when(args.end, "--end")
    if end < start:
        raise CliError("--end is before --start")
    db = PlatformDB(args.db)
    try:
        answer = db.check_maintenance(args.device, args.kind, start, end)
    finally:
        db.close()
    print("%s %s maintenance from %s to %s: %s (a session of at least %s)"
          % (args.device, args.kind, _stamp(start), _stamp(end), answer["result"],
             _duration(answer["min_duration_s"])))
    for sess in answer["sessions"]:
        print("  session %s: %s to %s, %s, %s door cycles, %s floors, %s" % (
            sess["id"], _stamp(sess["start"]), _stamp(sess["end"]), _duration(sess["duration_s"]),
            sess["door_cycles"], sess["floors_served"], sess["verified"]))
    return 0 if answer["result"] == "confirmed" else 1


def _stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return "%.0f %s" % (seconds / size, unit)
    return "%.0f s" % seconds


def cmd_devices_export_keys(args: argparse.Namespace) -> int:
    reg = Registry.in_dir(args.data)
    # the keys, and a rotated-out key while it is still good (the registry's own "previous")
    keys = {d.device_id: {k: v for k, v in d.to_json().items() if k in ("secret", "previous")}
            for d in reg.devices()}
    auth.write_private(args.out, json.dumps(keys, indent=1) + "\n")
    print("wrote the keys of %d devices to %s (mode 0600); import them on the platform with"
          " `edge-gateway platform import-keys %s`, then delete the file" % (len(reg), args.out, args.out))
    return 0


def cmd_devices_add(args: argparse.Namespace) -> int:
    check_profile(args.profile)   # before a secret is read from stdin
    secret = args.secret
    if secret == "-":
        # from stdin, so the secret stays out of the shell history and `ps`
        secret = sys.stdin.readline().strip()
    reg = Registry.in_dir(args.data)
    reg.add(args.device_id, args.profile, secret, replace=args.replace, grace_s=args.grace_days * 86400)
    reg.save()
    # the secret is never printed: it is in the file (mode 0600) for provisioning
    print("%s %s (profile %s) in %s; its secret is stored there, not shown"
          % ("replaced" if args.replace else "added", args.device_id, args.profile, reg.path))
    return 0


def cmd_devices_list(args: argparse.Namespace) -> int:
    reg = Registry.in_dir(args.data)
    if not len(reg):
        print("no devices in %s" % reg.path, file=sys.stderr)
    for dev in reg.devices():
        extra = " ".join("%s=%s" % kv for kv in sorted(dev.extra.items()))
        print("%s\t%s%s" % (dev.device_id, dev.profile, "\t" + extra if extra else ""))
    return 0


# ---- argument parsing -----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-gateway",
        description="City IoT gateway: MQTT ingest of signed device events, durable SQLite "
                    "store, upload to the district platform.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log lines as text (default) or as one JSON object a line, with a \"device\""
                        " field on lines about a device (docs/status-page.md)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway",
                         description="Receive events over MQTT, store them, upload them.")
    run.add_argument("--data", default=DEFAULT_DATA, metavar="DIR",
                     help="data directory: %s and the event store (default: %s)" % (FILENAME, DEFAULT_DATA))
    run.add_argument("--broker", default=EMBEDDED, metavar="embedded|mqtts://HOST:PORT|tls://HOST:PORT",
                     help="'embedded' starts an amqtt broker in-process (default); "
                          "mqtts://[user@]host[:port] uses an external one over TLS, e.g. mosquitto"
                          " (mqtt://: plain, to a loopback broker only unless %s);"
                          " tls://[user@]host[:port] (nats://: plain) speaks NATS to a nats-server's"
                          " client port (default 4222), where --share-group is a queue group;"
                          " a cluster's nodes comma-separated, tried in turn: mqtts://user@n1,n2,n3"
                          % INSECURE_FLAG)
    run.add_argument("--broker-ca", default=None, metavar="FILE",
                     help="mqtts:// or tls://: the CA certificate (PEM) the broker's must chain to"
                          " (default: the system's CAs)")
    run.add_argument("--broker-password-file", default=None, metavar="FILE",
                     help="the broker password, first line of a file only its owner can read (chmod 600);"
                          " default: $%s. Never in the URL" % PASSWORD_ENV)
    run.add_argument(INSECURE_FLAG, action="store_true",
                     help="allow plain MQTT off loopback (--broker mqtt://, or an embedded --listen on the"
                          " network): passwords and events cross the network in clear")
    run.add_argument("--listen", default="127.0.0.1:1883", metavar="HOST:PORT",
                     help="address of the embedded broker (default: 127.0.0.1:1883)")
    run.add_argument("--platform", default="http://127.0.0.1:8080", metavar="URL",
                     help="district platform base URL (default: http://127.0.0.1:8080)")
    run.add_argument("--gateway-id", default=None, metavar="ID",
                     help="this gateway's id in uploads (default: the one in --platform-credentials)")
    run.add_argument("--platform-credentials", default=None, metavar="FILE",
                     help="the gateway's id and secret for the platform, from `edge-gateway platform"
                          " add-gateway` (chmod 600; default: DATA/%s)" % auth.FILENAME)
    run.add_argument("--platform-ca", default=None, metavar="FILE",
                     help="https://: the CA certificate (PEM) the platform's must chain to (default: the system's CAs)")
    run.add_argument("--insecure-plain-http", action="store_true",
                     help="allow an http:// platform off loopback: anyone in the path reads the events and"
                          " can answer for the platform")
    run.add_argument("--client-id", default=None, metavar="ID",
                     help="MQTT client id of the persistent session (default: %s<gateway id>)"
                          % ids.GATEWAY_CLIENT_PREFIX)
    run.add_argument("--share-group", default=None, metavar="GROUP",
                     help="subscribe as $share/GROUP/... so several gateways split the devices"
                          " (NATS, --broker tls:// or nats://: as the queue group GROUP)")
    run.add_argument("--mqtt-version", choices=sorted(VERSIONS), default=None,
                     help="MQTT protocol to the broker (default: 5, or 3.1.1 for the embedded broker)")
    run.add_argument("--stream", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                     help="change an upload stream (%s); keys: batch_max, batch_age (s), rate"
                          " (events/s, 0 = no limit), retry_max (s), on_full (keep|drop_oldest), kinds (a+b). E.g."
                          " --stream telemetry:rate=500,batch_max=1000. See docs/delivery.md"
                          % ", ".join(s.name for s in DEFAULT_STREAMS))
    run.add_argument("--upload-timeout", type=float, default=10.0, metavar="SECONDS",
                     help="give up on an upload request after this long and retry it (default: 10)")
    run.add_argument("--max-db-mb", type=float, default=None, metavar="MB",
                     help="disk quota of the event store: over it, uploaded events are deleted first,"
                          " then the oldest pending telemetry; alarms never (default: no quota)")
    run.add_argument("--retention-days", type=float, default=7.0, metavar="DAYS",
                     help="delete uploaded events older than this (default: 7; 0 keeps them)")
    run.add_argument("--hj212", default=None, metavar="HOST:PORT",
                     help="also send water-quality and noise readings as HJ 212-2017 packets over TCP to this"
                          " environmental platform (default: off); see docs/hj212.md")
    run.add_argument("--hj212-mn", action="append", default=[], metavar="DEVICE=MN",
                     help="the HJ 212 MN (site id, up to 24 characters) of a device; repeat per device"
                          " (default: the device id)")
    run.add_argument("--hj212-password-file", default=None, metavar="FILE",
                     help="with --hj212: a file (mode 600) holding the access password (PW, 6 characters) the"
                          " environmental platform gave this site")
    run.add_argument("--insecure-plain-hj212", action="store_true",
                     help="allow --hj212 to a host off loopback: HJ 212 has no encryption, so anyone in the path"
                          " reads the password and the readings (use a VPN or a private APN)")
    run.add_argument("--hj212-version", choices=sorted(VERSIONS_212), default="2017",
                     help="the HJ 212 edition in the packets' Flag (default: 2017)")
    run.add_argument("--hj212-overtime", type=int, default=OVERTIME_S, metavar="SECONDS",
                     help="seconds to wait for the platform's 9014 before sending again (default: %d, the"
                          " standard's for mobile links; the platform may change it with CN=1000)" % OVERTIME_S)
    run.add_argument("--hj212-recount", type=int, default=RECOUNT, metavar="N",
                     help="times to send again without a 9014 before backing off (default: %d)" % RECOUNT)
    run.add_argument("--maintenance-interval-days", type=float, default=INTERVAL_DAYS, metavar="DAYS",
                     help="raise elevator.maintenance_overdue after this long without a genuine maintenance"
                          " session (default: %g, the Special Equipment Safety Supervision Regulation art. 31)"
                          % INTERVAL_DAYS)
    run.add_argument("--status-listen", default=None, metavar="HOST:PORT",
                     help="serve the status page on / (its JSON on /api/status) and Prometheus text on"
                          " /metrics; beyond loopback it needs --status-logins and --status-cert"
                          " (docs/status-page.md)")
    run.add_argument("--status-logins", default=None, metavar="FILE",
                     help="who may open the status page: a file from `edge-gateway status-login add`"
                          " (chmod 600); required when --status-listen is not a loopback address")
    run.add_argument("--status-cert", default=None, metavar="FILE",
                     help="serve the status page over HTTPS with this certificate (PEM, with its chain)")
    run.add_argument("--status-key", default=None, metavar="FILE", help="the --status-cert's private key (PEM)")
    run.add_argument("--insecure-plain-status", action="store_true",
                     help="allow the status page beyond loopback over plain HTTP: the logins' passwords"
                          " cross the network in clear")
    run.set_defaults(func=cmd_run)

    plat = sub.add_parser("platform", help="run the reference district-platform receiver",
                          description="Receive uploads (POST /v1/events) and store them by event id.")
    plat.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                      help="address to listen on (default: 127.0.0.1:8080)")
    plat.add_argument("--db", default="platform.sqlite", metavar="FILE",
                      help="SQLite file (default: platform.sqlite)")
    plat.add_argument("--hj212-listen", default=None, metavar="HOST:PORT",
                      help="also accept HJ 212-2017 packets over TCP here, stored in --db (default: off)")
    plat.add_argument("--print", action="store_true",
                      help="print each new event as one line on stdout")
    plat.add_argument("--cert", default=None, metavar="FILE",
                      help="serve HTTPS with this certificate (PEM, with its chain)")
    plat.add_argument("--key", default=None, metavar="FILE", help="the certificate's private key (PEM)")
    plat.set_defaults(func=cmd_platform)
    psub = plat.add_subparsers(dest="platform_command", metavar="ACTION",
                               description="without an ACTION: serve")
    padd = psub.add_parser("add-gateway", help="let a gateway upload: a new id and secret",
                           description="Add a gateway to the platform's database and write its credentials"
                                       " (id and secret) to a file only its owner can read.")
    padd.add_argument("gateway_id", metavar="GATEWAY_ID")
    padd.add_argument("--out", default=None, metavar="FILE",
                      help="where the credentials go (default: GATEWAY_ID.%s)" % auth.FILENAME)
    padd.add_argument("--replace", action="store_true", help="give an existing gateway a new secret")
    pkeys = psub.add_parser("import-keys", help="import device keys, so the platform checks each event's MAC",
                            description="Import the file `edge-gateway devices export-keys` wrote.")
    pkeys.add_argument("file", metavar="FILE")
    pver = psub.add_parser("verify", help="check every device's hash chain; exit 1 when a record was"
                                          " edited, removed or reordered")
    prev = psub.add_parser("review", help="devices worst first: false-alarm rate, alarm count, silence",
                           description="The devices to adjust or visit: by false-alarm rate (dispatch's"
                                       " outcomes, POST /v1/outcomes), then alarm count, then silence.")
    prev.add_argument("--days", type=int, default=30, metavar="DAYS", help="the period (default: 30)")
    pchk = psub.add_parser("check-maintenance", help="check a maintenance company's claimed record against"
                                                     " the sessions the elevator reported",
                           description="Confirmed (a session overlapping the time, long enough for the kind),"
                                       " no_session or too_short (docs/elevator-supervision.md). Exit 0 when"
                                       " confirmed, 1 when not.")
    pchk.add_argument("--device", required=True, metavar="DEVICE_ID", help="the elevator's device id")
    pchk.add_argument("--kind", required=True, choices=[k.name for k in KINDS],
                      help="the kind of work claimed (TSG T5002-2017)")
    pchk.add_argument("--start", required=True, metavar="TIME", help="start of the claimed work: unix seconds"
                                                                     " or ISO 8601 (local time)")
    pchk.add_argument("--end", required=True, metavar="TIME", help="end of the claimed work, likewise")
    for sp, fn in ((padd, cmd_platform_add_gateway), (pkeys, cmd_platform_import_keys),
                   (pver, cmd_platform_verify), (prev, cmd_platform_review),
                   (pchk, cmd_platform_check_maintenance)):
        sp.add_argument("--db", default="platform.sqlite", metavar="FILE",
                        help="the platform's SQLite file (default: platform.sqlite)")
        sp.set_defaults(func=fn)

    slog = sub.add_parser("status-login", help="manage who may open the status page",
                          description="Logins of the status page (HTTP Basic over HTTPS): names and scrypt"
                                      " hashes in a file only its owner can read.")
    ssub = slog.add_subparsers(dest="status_login_command", required=True, metavar="ACTION")
    sadd = ssub.add_parser("add", help="add or replace a login; the password is read from stdin",
                           description="Add or replace a login. The password is asked for twice on a"
                                       " terminal, or read as one line from a pipe; never an argument.")
    sadd.add_argument("name", metavar="NAME", help="the login name (A-Z a-z 0-9 . _ -)")
    sadd.add_argument("--file", required=True, metavar="FILE",
                      help="the logins file (made with mode 0600 if it is new)")
    sadd.set_defaults(func=cmd_status_login_add)

    dev = sub.add_parser("devices", help="manage the device registry",
                         description="Devices allowed to send events, with their secret and profile.")
    dsub = dev.add_subparsers(dest="devices_command", required=True, metavar="ACTION")
    add = dsub.add_parser("add", help="add a device",
                          description="Add a device. The secret is generated when not given "
                                      "and is never printed.")
    add.add_argument("device_id", metavar="DEVICE_ID")
    add.add_argument("--profile", required=True, help="sensor profile: %s" % ", ".join(PROFILES))
    add.add_argument("--secret", default=None, metavar="HEX",
                     help="the device's HMAC key in hex ('-' reads it from stdin); default: a new random one")
    add.add_argument("--replace", action="store_true", help="replace an existing device")
    add.add_argument("--grace-days", type=float, default=GRACE_S / 86400, metavar="DAYS",
                     help="with --replace and a new secret: accept the old one this long, for the events the "
                          "device signed before it got the new one (default %(default)g; 0 for a leaked key)")
    add.add_argument("--data", default=DEFAULT_DATA, metavar="DIR", help="data directory")
    add.set_defaults(func=cmd_devices_add)
    lst = dsub.add_parser("list", help="list devices (never their secrets)")
    lst.add_argument("--data", default=DEFAULT_DATA, metavar="DIR", help="data directory")
    lst.set_defaults(func=cmd_devices_list)
    exp = dsub.add_parser("export-keys", help="write the device keys for `edge-gateway platform import-keys`")
    exp.add_argument("--data", default=DEFAULT_DATA, metavar="DIR", help="data directory")
    exp.add_argument("--out", required=True, metavar="FILE", help="the file (written with mode 0600)")
    exp.set_defaults(func=cmd_devices_export_keys)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    jsonlog.setup(logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    try:
        return int(args.func(args))
    except (CliError, RegistryError, BrokerError, StreamError, auth.CredentialsError, StatusError,
            login.LoginError) as e:
        print("edge-gateway: error: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
