# The hardware behind one switch at import (micropython-lib style): every module above the
# HAL uses these names and never asks which board it runs on.
#   open_uart(config, de=None) -> UART: write(b), read(n, timeout_ms), flush_input(), close()
#   now() -> Unix seconds
#   Watchdog(timeout_ms): feed(), timeout_ms
# Ticks and sleeps are edge/clock.py; flash is a directory (edge/state.py, edge/outbox.py).
import sys

if sys.platform == "esp32":
    from edge.hal.esp32 import Watchdog, now, open_uart  # noqa: F401 (the HAL)
else:
    if sys.implementation.name == "micropython":
        from edge.hal.unix import now, open_uart  # noqa: F401 (the HAL)

        class Watchdog:
            """The unix port has no hardware watchdog: feeding is a no-op."""

            def __init__(self, timeout_ms):
                self.timeout_ms = timeout_ms

            def feed(self):
                pass
    else:
        # a Raspberry Pi: systemd's watchdog, fed over $NOTIFY_SOCKET
        from edge.hal.cpython import Watchdog, now, open_uart  # noqa: F401 (the HAL)
