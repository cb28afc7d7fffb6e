# Telemetry: send on a change, and after s seconds of silence anyway (filter
# "heartbeat"; contract, registry and chains: edge/filters.py).
from edge.filters import SKIP


class Heartbeat:
    """heartbeat(s, delta): pass a value when it moved more than delta from the last one
    passed, when it became or stopped being None, or when s seconds have passed without
    one; SKIP otherwise. Telemetry: changes at once, silence never longer than s."""

    def __init__(self, s, delta=0):
        self.s = s
        self.delta = delta
        self.reset()

    def reset(self):
        self.last = None
        self.last_t = None

    def step(self, t, v):
        last = self.last
        if self.last_t is not None and t - self.last_t < self.s:
            if (v is None) == (last is None) and (v is None or abs(v - last) <= self.delta):
                return SKIP
        self.last = v
        self.last_t = t
        return v
