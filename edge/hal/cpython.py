# HAL for CPython (a Raspberry Pi gateway or agent, and the test rig): the serial port
# through pyserial, waits with select.poll, flash is a directory.
import os
import select
import time

import serial

from edge import line


def now():
    return time.time()


def is_pty(path):
    """A pty moves bytes, not bits: parity means nothing on one, and Linux refuses PARENB
    there (EINVAL), so the virtual bus runs without it."""
    return os.path.realpath(path).startswith("/dev/pts/")


class UART:
    """A serial port (or pty) as a half-duplex RS-485 port.

    de: optional callable de(on) driving DE/RE from user space; rs485=True instead asks
    the kernel driver to toggle RTS around each frame, where the UART supports it.
    """

    def __init__(self, path, baud=line.BAUD, parity=line.PARITY, stop=None, de=None, rs485=False):
        stop = line.stop_bits(parity, stop)
        if is_pty(path):
            parity = "N"    # see is_pty
        # timeout=0: reads never block; waiting is done below with a deadline
        self._s = serial.Serial(path, baud, bytesize=line.DATA_BITS, parity=parity, stopbits=stop,
                                timeout=0, exclusive=True)
        if rs485:
            from serial import rs485 as _rs485
            self._s.rs485_mode = _rs485.RS485Settings()
        self._de = de
        self._poll = select.poll()
        self._poll.register(self._s.fileno(), select.POLLIN)

    def write(self, data):
        de = self._de
        if de:
            de(1)
        self._s.write(data)
        # tcdrain: the last stop bit has left, so DE can drop and the silence starts now
        self._s.flush()
        if de:
            de(0)

    def read(self, n, timeout_ms):
        """Up to n bytes, whatever arrived by the deadline."""
        buf = bytearray()
        deadline = time.monotonic() + timeout_ms / 1000
        while len(buf) < n:
            left = deadline - time.monotonic()
            if not self._poll.poll(left * 1000 if left > 0 else 0):
                break
            # pyserial raises SerialException if a ready port gives nothing (unplugged)
            buf += self._s.read(n - len(buf))
        return bytes(buf)

    def flush_input(self):
        self._s.reset_input_buffer()

    def close(self):
        self._s.close()


def open_uart(config, de=None):
    baud, parity, stop = line.settings(config)
    return UART(config["port"], baud, parity, stop, de, config.get("rs485", False))



class Watchdog:
    """systemd's watchdog (WatchdogSec= in boards/citynet-edge-agent.service): each feed()
    tells systemd over $NOTIFY_SOCKET that the loop is healthy; when the feeds stop,
    systemd kills the agent and starts it again. Outside systemd, nothing to tell."""

    def __init__(self, timeout_ms):
        import socket
        self.timeout_ms = timeout_ms
        self._sock = None
        addr = os.environ.get("NOTIFY_SOCKET")
        if addr:
            # an abstract socket is written with a leading @
            self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._send(b"READY=1")

    def _send(self, message):
        try:
            self._sock.sendto(message, self._addr)
        except OSError:
            pass   # systemd restarting itself: the next feed tries again

    def feed(self):
        if self._sock is not None:
            self._send(b"WATCHDOG=1")
