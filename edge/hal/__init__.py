# The hardware behind one switch at import (micropython-lib style): every module above the
# HAL uses these names and never asks which board it runs on.
#   open_uart(config, de=None) -> UART: write(b), read(n, timeout_ms), flush_input(), close()
#   now() (Unix seconds), ticks_ms(), ticks_diff(a, b), Watchdog(timeout_ms).feed(),
#   flash_dir(config) -> directory for persistent files, created if missing
import os
import sys

if sys.platform == "esp32":
    from edge.hal.esp32 import UART, Watchdog, now, open_uart, ticks_diff, ticks_ms
    _FLASH = "/data"
else:
    if sys.implementation.name == "micropython":
        from edge.hal.unix import UART, now, open_uart, ticks_diff, ticks_ms
    else:
        from edge.hal.cpython import UART, now, open_uart, ticks_diff, ticks_ms
    _FLASH = "flash"

    class Watchdog:
        """No watchdog off the board: a supervisor (systemd WatchdogSec) is the place for one."""

        def __init__(self, timeout_ms):
            self.timeout_ms = timeout_ms

        def feed(self):
            pass


def flash_dir(config):
    path = config.get("flash", _FLASH)
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists
    return path
