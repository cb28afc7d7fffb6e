"""`edgectl broker`: run mosquitto on loopback with the device passwords and ACL that
`edgectl provision` writes (tools/common/credentials.py), anonymous clients refused.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from tools.common.credentials import DEFAULT_DIR, GATEWAY_USER, BrokerAuth, running_port, start_broker, write_private

def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--dir", default=DEFAULT_DIR, metavar="DIR",
                    help="where the password and ACL files live (default: %(default)s; "
                         "edgectl provision --broker-auth writes to the same place)")
    ap.add_argument("--port", type=int, default=1883, help="port on 127.0.0.1 (default: 1883)")
    ap.add_argument("--stop", action="store_true", help="stop the broker running from --dir")


def run(args: argparse.Namespace) -> int:
    auth = BrokerAuth(args.dir)
    if args.stop:
        if running_port(auth) is None:
            print("no broker runs from %s" % args.dir)
            return 0
        # the `edgectl broker` process, which stops its mosquitto on the way out
        os.kill(int(open(os.path.join(auth.dir, "broker.pid")).read()), signal.SIGTERM)
        print("broker in %s stopped" % args.dir)
        return 0
    try:
        broker = start_broker(auth, args.port)
    except RuntimeError as e:
        print("edgectl broker: %s" % e, file=sys.stderr)
        return 1
    write_private(os.path.join(auth.dir, "port"), "%d\n" % broker.port)
    write_private(os.path.join(auth.dir, "broker.pid"), "%d\n" % os.getpid())
    password_file = os.path.join(auth.dir, "gateway.password")
    print("broker: mosquitto on 127.0.0.1:%d, anonymous clients refused; users and ACL in %s\n"
          "the gateway connects as user %r with the password in %s (mode 0600):\n"
          "  edge-gateway run --broker mqtt://%s@127.0.0.1:%d --broker-password-file %s\n"
          "Ctrl-C stops it" % (broker.port, auth.dir, GATEWAY_USER, password_file,
                               GATEWAY_USER, broker.port, password_file), flush=True)
    signal.signal(signal.SIGTERM, lambda *a: broker.proc.terminate())
    try:
        broker.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
        for name in ("port", "broker.pid"):
            try:
                os.remove(os.path.join(auth.dir, name))
            except OSError:
                pass
    return 0
