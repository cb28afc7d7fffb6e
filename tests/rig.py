# Test rig helpers that start real parts on loopback. This part: a private mosquitto
# broker per test (free port, no persistence), stopped by its PID. The broker itself is
# tools/common/mosquitto.py, the one the demo and the site runner use.
#
#   broker, port = start_mosquitto(tmp_path)
#   ...
#   stop_mosquitto(broker)
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tools.common.mosquitto import Mosquitto
from tools.common.procs import free_port  # noqa: F401  (for the tests)
# a device stand-in on MQTT: the test bench's signed events and publisher
from tools.testbench.devices import Publisher, signed_event  # noqa: F401  (for the tests)


class MosquittoError(RuntimeError):
    """mosquitto could not be started; the message carries its own output."""


def start_mosquitto(tmpdir: str | Path, port: int | None = None,
                    extra_conf: str = "", **options: Any) -> tuple[Mosquitto, int]:
    """Start mosquitto on 127.0.0.1 (a free port unless given), without persistence: a
    restart forgets sessions. Fails loudly (MosquittoError with mosquitto's own output).
    options: more of tools.common.mosquitto.Mosquitto's, e.g. max_packet_size=0."""
    broker = Mosquitto(os.path.join(str(tmpdir), "mosquitto"), port, extra=extra_conf, persistence=False,
                       **options)
    try:
        broker.start()
    except RuntimeError as e:
        raise MosquittoError(str(e)) from None
    return broker, broker.port


def stop_mosquitto(broker: Mosquitto) -> None:
    """Stop the broker we started, by its PID; killed if it does not exit in 5 s."""
    broker.stop()


# ---- code under the MicroPython unix port ---------------------------------------------

def run_micropython(script: str | Path, *args: str, paths: tuple[str, ...] = ()) -> str:
    """Run a script under the unix port with the repo (and `paths`) importable: its
    stdout, or RuntimeError with its exit status and stderr. Keep arguments short and
    pass data in files: the unix port dies ("FATAL: uncaught NLR") on an argument of
    about 300 bytes."""
    import subprocess
    from tools.common import runtime
    proc = subprocess.run([runtime.micropython(), str(script), *args], env=runtime.micropython_env(*paths),
                          capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise RuntimeError("micropython %s exited with %d:\n%s" % (script, proc.returncode, proc.stderr or proc.stdout))
    return proc.stdout
