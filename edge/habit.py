# A household's learned daily water habit, small enough to keep on flash: for each
# local hour of the day, the longest dry spell (no water used) that usually starts in
# that hour. Sleep, a day out or a night shift show up as long spells starting at the
# hours this household goes to bed or leaves; nothing assumes a clock-fixed sleep window.
# Layout and reasoning: docs/detectors-water.md, "Habit model".

VERSION = 1
UNIT_S = 600        # spell lengths are kept in 10-minute units: one byte holds 42 h
_DAYS = 1           # byte offsets in the record
_BINS = 2
_LAST_USE = 26      # u32 unix seconds of the last use of water (0: unknown)
_TOTAL = 30         # u32 litres: meter total at that moment, proves no use since
SIZE = 34


def _u32(b, i):
    return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)


def _put_u32(b, i, v):
    v = int(v) & 0xFFFFFFFF
    for k in range(4):
        b[i + k] = (v >> (8 * k)) & 0xFF


class Habit:
    """bins[h] = longest usual dry spell starting in local hour h, in UNIT_S units
    (0 = never seen one start then). learn() raises a bin at once (a longer spell is a
    fact), add_day() lowers every bin by one unit (10 min) a day, so a
    habit the household dropped fades within weeks while one it keeps is re-learned. days
    counts learned days, saturating at 255."""

    def __init__(self, data=None):
        self.b = bytearray(SIZE)
        self.b[0] = VERSION
        if data is not None and len(data) == SIZE and data[0] == VERSION:
            self.b[:] = data

    def days(self):
        return self.b[_DAYS]

    def add_day(self):
        if self.b[_DAYS] < 255:
            self.b[_DAYS] += 1
        for h in range(24):
            if self.b[_BINS + h] > 1:      # 1 stays: "spells do start at this hour"
                self.b[_BINS + h] -= 1

    def usual_s(self, hour, spread):
        """Longest usual spell starting within spread hours of hour, in seconds;
        None if no spell was ever seen starting in hour itself (no evidence: the
        caller stays conservative)."""
        if self.b[_BINS + hour % 24] == 0:
            return None
        m = 0
        for d in range(-spread, spread + 1):
            v = self.b[_BINS + (hour + d) % 24]
            if v > m:
                m = v
        return m * UNIT_S

    def learn(self, hour, spell_s):
        """Returns the increase of the bin in units (the caller saves on a big one)."""
        u = int(spell_s) // UNIT_S
        if u < 1:
            u = 1   # a short spell still marks the hour as one where spells start
        if u > 255:
            u = 255
        i = _BINS + hour % 24
        old = self.b[i]
        if u > old:
            self.b[i] = u
            return u - old
        return 0

    def set_clock(self, last_use_t, total_m3):
        _put_u32(self.b, _LAST_USE, last_use_t or 0)
        _put_u32(self.b, _TOTAL, 0 if total_m3 is None else int(total_m3 * 1000 + 0.5))

    def clock(self):
        """(last use unix seconds, meter total in m3) as saved, or (None, None)."""
        t = _u32(self.b, _LAST_USE)
        if t == 0:
            return None, None
        return t, _u32(self.b, _TOTAL) / 1000

    def to_bytes(self):
        return bytes(self.b)
