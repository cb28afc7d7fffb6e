# HAL for ESP32 boards: machine.UART with the RS-485 DE/RE pin, machine.WDT, and the
# internal filesystem as flash. Cannot run off the board; kept thin (see tests for the rest).
import select
import time

import machine
from time import sleep_us, ticks_add, ticks_diff, ticks_ms

# The embedded ports count from 2000-01-01; events carry Unix time.
_EPOCH = 946684800 if time.gmtime(0)[0] == 2000 else 0
_PARITY = {"N": None, "E": 0, "O": 1}


def now():
    return time.time() + _EPOCH


class UART:
    def __init__(self, uart_id, baud, tx, rx, parity, stop, char_bits, de_pin=None):
        # timeout=0: read() returns at once; waits happen in poll() with a deadline
        self._u = machine.UART(uart_id, baudrate=baud, tx=tx, rx=rx, bits=8,
                               parity=_PARITY[parity], stop=stop, timeout=0)
        self._de = None
        if de_pin is not None:
            self._de = machine.Pin(de_pin, machine.Pin.OUT, value=0)
        self._char_us = char_bits * 1000000 // baud
        self._poll = select.poll()
        self._poll.register(self._u, select.POLLIN)

    def write(self, data):
        de = self._de
        if de is None:
            self._u.write(data)
            return
        de.value(1)
        self._u.write(data)
        # release the bus only after the last stop bit, or the slave's reply collides
        try:
            self._u.flush()
        except AttributeError:  # firmware before UART.flush(): wait the frame's time
            sleep_us(len(data) * self._char_us)
        de.value(0)

    def read(self, n, timeout_ms):
        """Up to n bytes, whatever arrived by the deadline."""
        buf = b""
        deadline = ticks_add(ticks_ms(), timeout_ms)
        while len(buf) < n:
            left = ticks_diff(deadline, ticks_ms())
            if not self._poll.poll(left if left > 0 else 0):
                break
            chunk = self._u.read(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return buf

    def flush_input(self):
        while self._u.any():
            self._u.read()

    def close(self):
        self._u.deinit()


def open_uart(config, de=None):
    # de: the DE/RE pin comes from the config on a board; the argument keeps one signature
    from edge import line   # boot-time only: edge.boot unloads it
    baud, parity, stop = line.settings(config)
    return UART(config.get("uart_id", 1), baud, config["tx"], config["rx"], parity, stop,
                line.char_bits(parity, stop), config.get("de_pin"))


class Watchdog:
    """machine.WDT: once started it cannot be stopped, so start it after boot succeeds."""

    def __init__(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms)
        self.timeout_ms = timeout_ms

    def feed(self):
        self._wdt.feed()

