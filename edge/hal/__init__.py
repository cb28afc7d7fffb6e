# The hardware behind one switch at import (micropython-lib style): every module above the
# HAL uses these names and never asks which board it runs on.
#   open_uart(config, de=None) -> UART with write(b), read(n, timeout_ms), flush_input(), close()
#   now() (Unix seconds), ticks_ms(), ticks_diff(a, b), sleep_ms(ms), Watchdog(ms).feed(),
#   flash_dir(config) -> directory for persistent files
import sys

if sys.platform == "esp32":
    from edge.hal.esp32 import UART, Watchdog, flash_dir, now, open_uart, sleep_ms, ticks_diff, ticks_ms
elif sys.implementation.name == "micropython":
    from edge.hal.unix import UART, Watchdog, flash_dir, now, open_uart, sleep_ms, ticks_diff, ticks_ms
else:
    from edge.hal.cpython import UART, Watchdog, flash_dir, now, open_uart, sleep_ms, ticks_diff, ticks_ms
