"""edgectl: the installer's and developer's tool for the edge stack.

Each installer's command lives in its own module under tools/, named after it; the test
bench's (virtual board, simulator, replay, demo, benchmarks) under tools/testbench/. Each
contributes its arguments through add_arguments(parser) and its work through run(args).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand: (module, one-line help)
COMMANDS = {
    # the installer's commands: tools/<command>.py
    "provision": ("tools.provision", "give a board its identity and config, deploy the agent, self-test it, start it"),
    "flash": ("tools.flash", "write MicroPython firmware into an ESP32 board with esptool"),
    "scan": ("tools.scan", "find the Modbus slave ids that answer on a bus (from this machine's RS-485 adapter)"),
    "read": ("tools.read", "read one Modbus device once and print its decoded readings"),
    "logs": ("tools.logs", "follow what a board prints on its serial console"),
    "broker": ("tools.broker", "run mosquitto with the device passwords and ACL that provision writes"),
    # the test bench: tools/testbench/<command>.py
    "board": ("tools.testbench.board",
              "start, reset or stop a virtual board (MicroPython behind a pty) to try things on"),
    "simulate": ("tools.testbench.simulate",
                 "play a trace as a Modbus RTU device or a CJ/T 188 water meter on a serial port"),
    "replay": ("tools.testbench.replay", "run the on-device alarm pipeline over recorded traces"),
    "demo": ("tools.testbench.demo", "run a small simulated site end to end (what `make demo` runs)"),
    "bench": ("tools.testbench.bench", "measure the agent's cost per sample, its heap, bytes per event, publish rate"),
    "bench-delivery": ("tools.testbench.bench_delivery",
                       "measure the gateway: durable ingest rate, alarm latency, backlog drain"),
    "bench-scale": ("tools.testbench.bench_scale",
                    "measure one and two gateway instances sharing thousands of devices' connections"),
    "fuzz": ("tools.testbench.fuzz",
             "feed every parser of outside bytes mutated and random inputs; print the counts and any crash"),
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgectl", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, helptext) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args._run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
