# HAL for the MicroPython unix port (a Pi, or the virtual board on a socat pty): the
# serial port through open() and termios, waits with select.poll, flash is a directory.
import select
import termios
import time

from micropython import const
from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

# Linux termios numbers; the unix port's termios module only names B9600 and up. The
# flags are const(): the compiler writes them into the code, so they are no globals.
_BAUD = {1200: 0o11, 2400: 0o13, 4800: 0o14, 9600: 0o15, 19200: 0o16, 38400: 0o17,
         57600: 0o10001, 115200: 0o10002}
_CSTOPB = const(0o100)
_PARENB = const(0o400)
_PARODD = const(0o1000)
_VTIME = const(5)
_VMIN = const(6)


def now():
    return time.time()


class UART:
    """A tty or pty as a half-duplex RS-485 port.

    de: optional callable de(on) driving the transceiver's DE/RE line; on a Pi under
    the unix port that is a GPIO helper, on a pty it is not needed.
    """

    def __init__(self, path, baud, parity, stop, char_bits, de=None):
        # FileIO from open() has no buffer of its own, so poll() sees what the tty holds
        self._f = open(path, "r+b")
        self._de = de
        self._bits = char_bits
        self.baud = baud
        fd = self._f.fileno()
        termios.setraw(fd)
        attr = termios.tcgetattr(fd)
        cflag = attr[2] & ~(_CSTOPB | _PARENB | _PARODD)
        if parity in ("E", "O"):
            cflag |= _PARENB | (_PARODD if parity == "O" else 0)
        if stop == 2:
            cflag |= _CSTOPB
        attr[2] = cflag
        if baud in _BAUD:
            attr[4] = attr[5] = _BAUD[baud]
        # VMIN=0 VTIME=0: read() returns what is there instead of blocking for n bytes
        attr[6][_VMIN] = 0
        attr[6][_VTIME] = 0
        try:
            termios.tcsetattr(fd, termios.TCSANOW, attr)
        except OSError:
            # a pty moves bytes, not bits: Linux refuses PARENB on one (EINVAL)
            attr[2] = cflag & ~(_PARENB | _PARODD)
            termios.tcsetattr(fd, termios.TCSANOW, attr)
        self._poll = select.poll()
        self._poll.register(self._f, select.POLLIN)

    def write(self, data):
        de = self._de
        if de:
            de(1)
        self._f.write(data)
        if de:
            # no tcdrain in the unix port: wait the frame's time on the wire
            sleep_ms(len(data) * self._bits * 1000 // self.baud + 1)
            de(0)

    def read(self, n, timeout_ms):
        """Up to n bytes, whatever arrived by the deadline."""
        buf = b""
        deadline = ticks_add(ticks_ms(), timeout_ms)
        while len(buf) < n:
            left = ticks_diff(deadline, ticks_ms())
            events = self._poll.poll(left if left > 0 else 0)
            if not events:
                break
            chunk = self._f.read(n - len(buf))
            if not chunk:
                if events[0][1] & (select.POLLHUP | select.POLLERR):
                    raise OSError("serial port hung up")
                break
            buf += chunk
        return buf

    def flush_input(self):
        while self._poll.poll(0):
            if not self._f.read(256):
                break

    def close(self):
        self._f.close()


def open_uart(config, de=None):
    from edge import line   # boot-time only: edge.boot unloads it
    baud, parity, stop = line.settings(config)
    return UART(config["port"], baud, parity, stop, line.char_bits(parity, stop), de)

