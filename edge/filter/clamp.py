# A reading that may overshoot its scale is limited to [lo, hi] (filter "clamp";
# contract, registry and chains: edge/filters.py).


class Clamp:
    """clamp(lo, hi): limit to [lo, hi] (a reading that may overshoot its scale). None -> None."""
    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi):
        self.lo = lo
        self.hi = hi

    def reset(self):
        pass   # no state

    def step(self, t, v):
        if v is None:
            return None
        return self.lo if v < self.lo else self.hi if v > self.hi else v
