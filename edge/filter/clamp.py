# A reading that may overshoot its scale is limited to [lo, hi] (filter "clamp";
# contract, registry and chains: edge/filters.py).
from edge.filter.range import Range


class Clamp(Range):
    """clamp(lo, hi): limit to [lo, hi] (a reading that may overshoot its scale). None -> None."""

    def step(self, t, v):
        if v is None:
            return None
        return self.lo if v < self.lo else self.hi if v > self.hi else v
