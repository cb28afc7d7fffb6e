# Debounce by count: true when n of the last m known inputs were (filter "n_of_m";
# contract, registry and chains: edge/filters.py).


class NOfM:
    """n_of_m(n, m): True when at least n of the last m known inputs were true
    (n_of_m(2, 2): two polls in a row). None is skipped: it neither counts nor breaks
    a run, and returns the current state."""

    def __init__(self, n, m):
        if not 0 < n <= m <= 30:
            raise ValueError("n_of_m: need 0 < n <= m <= 30, got %r, %r" % (n, m))
        self.n = n
        self.m = m
        self.reset()

    def reset(self):
        self.bits = 0      # the last m inputs, newest in bit 0
        self.out = None

    def step(self, t, v):
        if v is None:
            return self.out
        self.bits = ((self.bits << 1) | (1 if v else 0)) & ((1 << self.m) - 1)
        b = self.bits
        k = 0
        while b:
            k += b & 1
            b >>= 1
        self.out = k >= self.n
        return self.out
