# A known no-data marker value (e.g. floor 0) becomes unknown (filter "filter_out";
# contract, registry and chains: edge/filters.py).


class FilterOut:
    """filter_out(x): the value x is a known "no data" marker (e.g. floor 0) -> None."""

    def __init__(self, x):
        self.x = x

    def reset(self):
        pass   # no state

    def step(self, t, v):
        return None if v == self.x else v
