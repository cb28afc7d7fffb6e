# `edge-gateway`: run the gateway, run the reference platform receiver, manage the
# device registry. Every error a user can cause ends in one line saying what is wrong
# and what to do, and exit status 2; no traceback.
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path

from edge import ids
from gateway.broker import BrokerError, describe_os_error, parse_listen
from gateway.http import parse_url
from gateway.registry import FILENAME, PROFILES, Registry, RegistryError, check_profile
from gateway.mqtt import VERSIONS
from gateway.service import EMBEDDED, GatewayConfig, run_gateway
from gateway.streams import DEFAULT_STREAMS, StreamError, apply_options

log = logging.getLogger("gateway")

DEFAULT_DATA = "gateway-data"
EXIT_USAGE = 2


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


# ---- subcommands --------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    broker = args.broker
    if broker != EMBEDDED and not broker.startswith("mqtt://"):
        raise CliError("--broker %r: use 'embedded' or mqtt://host:port" % broker)
    if args.max_db_mb is not None and args.max_db_mb <= 0:
        raise CliError("--max-db-mb %s: give a size in MB above 0, or leave it out for no quota"
                       % args.max_db_mb)
    if args.upload_timeout <= 0 or args.retention_days < 0:
        raise CliError("--upload-timeout must be above 0 and --retention-days at least 0")
    try:
        parse_url(args.platform)
    except ValueError as e:
        raise CliError("--platform %s" % e) from None
    cfg = GatewayConfig(data_dir=Path(args.data), platform_url=args.platform, broker=broker,
                        listen=args.listen, gateway_id=args.gateway_id, client_id=args.client_id,
                        share_group=args.share_group, mqtt_version=args.mqtt_version,
                        streams=apply_options(DEFAULT_STREAMS, args.stream),
                        upload_timeout=args.upload_timeout, max_db_mb=args.max_db_mb,
                        retention_days=args.retention_days, status_listen=args.status_listen)
    return asyncio.run(run_gateway(cfg))


def cmd_platform(args: argparse.Namespace) -> int:
    from gateway.platform import PlatformServer   # aiohttp: not in the gateway's own process
    host, port = parse_listen(args.listen, 8080)

    async def serve() -> int:
        server = PlatformServer(args.db, host, port, echo=sys.stdout if args.print else None)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await server.start()
        except OSError as e:
            raise CliError("cannot listen on %s:%d: %s; pick another --listen HOST:PORT"
                           % (host, port, describe_os_error(e))) from e
        try:
            await stop.wait()
        finally:
            await server.stop()
        return 0
    return asyncio.run(serve())


def cmd_devices_add(args: argparse.Namespace) -> int:
    check_profile(args.profile)   # before a secret is read from stdin
    secret = args.secret
    if secret == "-":
        # from stdin, so the secret stays out of the shell history and `ps`
        secret = sys.stdin.readline().strip()
    reg = Registry.in_dir(args.data)
    reg.add(args.device_id, args.profile, secret, replace=args.replace)
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
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway",
                         description="Receive events over MQTT, store them, upload them.")
    run.add_argument("--data", default=DEFAULT_DATA, metavar="DIR",
                     help="data directory: %s and the event store (default: %s)" % (FILENAME, DEFAULT_DATA))
    run.add_argument("--broker", default=EMBEDDED, metavar="embedded|mqtt://HOST:PORT",
                     help="'embedded' starts an amqtt broker in-process (default); "
                          "mqtt://[user[:password]@]host[:port] uses an external one, e.g. mosquitto")
    run.add_argument("--listen", default="127.0.0.1:1883", metavar="HOST:PORT",
                     help="address of the embedded broker (default: 127.0.0.1:1883)")
    run.add_argument("--platform", default="http://127.0.0.1:8080", metavar="URL",
                     help="district platform base URL (default: http://127.0.0.1:8080)")
    run.add_argument("--gateway-id", default=socket.gethostname(), metavar="ID",
                     help="this gateway's id in uploads (default: the host name)")
    run.add_argument("--client-id", default=None, metavar="ID",
                     help="MQTT client id of the persistent session (default: %s<gateway id>)"
                          % ids.GATEWAY_CLIENT_PREFIX)
    run.add_argument("--share-group", default=None, metavar="GROUP",
                     help="subscribe as $share/GROUP/... so several gateways split the devices")
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
    run.add_argument("--status-listen", default=None, metavar="HOST:PORT",
                     help="serve counters as JSON on / and Prometheus text on /metrics")
    run.set_defaults(func=cmd_run)

    plat = sub.add_parser("platform", help="run the reference district-platform receiver",
                          description="Receive uploads (POST /v1/events) and store them by event id.")
    plat.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                      help="address to listen on (default: 127.0.0.1:8080)")
    plat.add_argument("--db", default="platform.sqlite", metavar="FILE",
                      help="SQLite file (default: platform.sqlite)")
    plat.add_argument("--print", action="store_true",
                      help="print each new event as one line on stdout")
    plat.set_defaults(func=cmd_platform)

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
    add.add_argument("--data", default=DEFAULT_DATA, metavar="DIR", help="data directory")
    add.set_defaults(func=cmd_devices_add)
    lst = dsub.add_parser("list", help="list devices (never their secrets)")
    lst.add_argument("--data", default=DEFAULT_DATA, metavar="DIR", help="data directory")
    lst.set_defaults(func=cmd_devices_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (CliError, RegistryError, BrokerError, StreamError) as e:
        print("edge-gateway: error: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
