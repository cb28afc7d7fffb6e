# Smoothing: the median of the last n known values (filter "median"; contract, registry
# and chains: edge/filters.py).


class Median:
    """median(n): median of the last n known values (fewer at the start). A None input
    gives None and does not enter the window."""

    def __init__(self, n):
        self.n = n
        self.win = []

    def reset(self):
        self.win = []

    def step(self, t, v):
        if v is None:
            return None
        win = self.win
        win.append(v)
        if len(win) > self.n:
            win.pop(0)
        s = sorted(win)
        k = len(s)
        return s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2
