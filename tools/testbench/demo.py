"""edgectl demo: a small simulated site, end to end, with every part real.

One elevator (it traps a passenger between floors) and one household water meter (a tap
is left running), each a pymodbus slave on its own virtual RS-485 bus, each read by our
agent under the MicroPython unix port; a broker; the gateway; the reference platform
receiver, which prints every event as it arrives. Scenarios are generated here, so the
demo needs nothing but the project. DEMO_SECONDS=N (or --seconds) stops it after N
seconds; Ctrl-C stops it at any time. The device clocks run faster than real time so
incidents that take an hour to confirm show up within a minute.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading

from tools.testbench import scenarios
from tools.testbench.services import platform_get
from tools.testbench.site import Device, Site


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("DEMO_SECONDS", 0) or 0),
                    help="stop after this many seconds (default: $DEMO_SECONDS, else run until Ctrl-C)")
    ap.add_argument("--workdir", default=os.path.join(os.getcwd(), "run", "demo"),
                    help="where logs, traces, the gateway store and the platform store go (default ./run/demo)")
    ap.add_argument("--broker", choices=("embedded", "mosquitto"), default="embedded",
                    help="the gateway's embedded broker (default) or a private mosquitto")
    ap.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython",
                    help="run the agents under the MicroPython unix port (default) or CPython")


def run(args: argparse.Namespace) -> int:
    if os.path.exists(args.workdir):
        shutil.rmtree(args.workdir)
    os.makedirs(args.workdir)
    elevator = scenarios.write(os.path.join(args.workdir, "elevator.jsonl.gz"),
                               *scenarios.elevator(seconds=3600, entrapment_at=30))
    water = scenarios.write(os.path.join(args.workdir, "water.jsonl.gz"),
                            *scenarios.water_meter(seconds=3 * 86400, flow_from=900))
    devices = [
        Device("elev-0001", "elevator", elevator, speed=3, runtime=args.runtime),
        Device("wm-0001", "water_meter", water, speed=300, runtime=args.runtime),
    ]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("demo: starting broker (%s), platform receiver, gateway, 2 virtual buses, 2 simulated sensors, 2 agents"
          % args.broker)
    print("demo: logs and stores in %s" % args.workdir)
    print("demo: elevator clock x3 (a passenger is trapped at t=30 s), "
          "water meter clock x300 (a tap left open at 15 min)")
    site = Site(args.workdir, devices, broker=args.broker, platform_print=True)
    try:
        site.start()
        print("demo: running%s; Ctrl-C stops it" % (" for %.0f s" % args.seconds if args.seconds else ""))
        sys.stdout.flush()
        stop.wait(args.seconds or None)
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        print("demo: %s" % e, file=sys.stderr)
        site.stop()
        return 1
    try:
        counts = platform_get(site.platform_url, "/v1/counts", site.credentials, timeout=5)
    except OSError as e:
        counts = {"error": str(e)}
    site.stop()
    print("demo: stopped. events at the platform per device and type:")
    print(json.dumps(counts, indent=1, sort_keys=True))
    return 0
