# Debounce in time: false only once the input has held false for s seconds (filter
# "delayed_off"; contract, registry and chains: edge/filters.py).
from edge.filter.delayed_on import Delayed


class DelayedOff(Delayed):
    """delayed_off(s): False only once the input has been false for s seconds; true
    passes at once. None holds, as for delayed_on."""

    def step(self, t, v):
        if v is None:
            return self.out
        if v:
            self.since = None
            self.out = True
        else:
            if self.since is None:
                self.since = t
            if t - self.since >= self.s or self.out is None:
                self.out = False
        return self.out
