# Ride through short dropouts with the last value, then go stale (filter "timeout";
# contract, registry and chains: edge/filters.py).


class Timeout:
    """timeout(s): None is replaced by the last known value while it is younger than s
    seconds, then stays None (stale): a short dropout is ridden through, a long one
    becomes unknown. A known value passes."""

    def __init__(self, s):
        self.s = s
        self.reset()

    def reset(self):
        self.last = None
        self.last_t = None

    def step(self, t, v):
        if v is not None:
            self.last = v
            self.last_t = t
            return v
        if self.last_t is not None and t - self.last_t < self.s:
            return self.last
        return None
