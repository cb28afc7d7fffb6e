# CPython only (the agent on a Raspberry Pi): gives umqtt.simple the MicroPython socket
# it expects (usocket with stream read/write), so both runtimes run the same MQTT code.
import binascii
import socket as _socket
import struct
import sys


class Socket:
    def __init__(self, *args):
        self._s = _socket.socket(*args)

    def connect(self, addr):
        self._s.connect(addr)

    def write(self, buf, n=None):
        if isinstance(buf, str):   # MicroPython streams take str too (umqtt sends the client id so)
            buf = buf.encode()
        data = memoryview(buf)[:n] if n is not None else buf
        self._s.sendall(data)
        return len(data)

    def read(self, n):
        # MicroPython's stream read on a blocking socket returns n bytes unless EOF
        chunks = []
        while n > 0:
            b = self._s.recv(n)
            if not b:
                break
            chunks.append(b)
            n -= len(b)
        return b"".join(chunks)

    def setblocking(self, flag):
        self._s.setblocking(flag)

    def settimeout(self, t):
        self._s.settimeout(t)

    def setsockopt(self, level, opt, value):
        self._s.setsockopt(level, opt, value)

    def fileno(self):
        return self._s.fileno()

    def close(self):
        self._s.close()


class _Module:
    socket = Socket
    getaddrinfo = staticmethod(_socket.getaddrinfo)


def install():
    """Make `import umqtt.simple` work on CPython: MicroPython module names, and the
    MICROPYPATH folders (where umqtt.simple is installed for both runtimes) on sys.path."""
    import os
    for folder in os.environ.get("MICROPYPATH", "").split(":"):
        if folder and folder not in sys.path:
            sys.path.append(folder)
    sys.modules.setdefault("usocket", _Module)
    sys.modules.setdefault("ustruct", struct)
    sys.modules.setdefault("ubinascii", binascii)
