# Millisecond ticks that wrap safely on MicroPython and fall back to time.monotonic on
# CPython: every deadline in the agent is computed with these, and every wait is a
# sleep_ms to the nearest one. And const(), the other thing the agent needs of both.
import time

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        # MicroPython's compiler writes a const() into the code that uses it, and keeps
        # no global at all for a _NAME: a board interns every name it loads, for good
        # (docs/heap.md)
        return x

try:
    ticks_ms = time.ticks_ms
    ticks_add = time.ticks_add
    ticks_diff = time.ticks_diff
    sleep_ms = time.sleep_ms
except AttributeError:  # CPython
    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_add(t, delta):
        return t + delta

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        time.sleep(ms / 1000)
