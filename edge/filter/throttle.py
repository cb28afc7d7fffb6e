# Telemetry: at most one value every s seconds (filter "throttle"; contract, registry
# and chains: edge/filters.py).
from edge.filters import SKIP


class Throttle:
    """throttle(s): pass at most one value every s seconds, SKIP the others. None is a
    value here (an unknown worth reporting) and is throttled like any other."""

    def __init__(self, s):
        self.s = s
        self.last_t = None

    def reset(self):
        self.last_t = None

    def step(self, t, v):
        if self.last_t is not None and t - self.last_t < self.s:
            return SKIP
        self.last_t = t
        return v
