# Construction-site noise: construction-level noise at night (GB 12523-2011: night
# 22:00-06:00 and a 55 dB(A) night limit unless the installer's config says otherwise).
# A 10 s Leq is loud when it is well over the limit; construction keeps most of ten
# minutes loud, while a siren, a passing truck or a burst of traffic fills a minute or
# two. Rain (and wind on the microphone) can stay loud for hours, but it is steady: its
# loud polls sit within a dB or two of each other, while machines and hammering swing
# by several dB from poll to poll; a steady level counts only beyond the night's LAmax
# allowance (limit + 15 dB). Daytime work never counts: only polls inside the night
# hours do. A meter whose register stopped changing is a device-health report, and its
# frozen values judge nothing.
# Why each rule and number: docs/noise.md.
from edge.alarm import Alarm
from edge.detect.health import Frozen

# name: default,  # why (one line); the full reasoning per entry is in docs/noise.md.
# Reasons are comments so they cost no RAM on a board.
PARAMS = {
    "excess_db": 6,  # dB over the limit: 4x its energy; rain stays under it
    "window_s": 600,  # ten minutes of polls judged together
    "loud_pct": 67,  # of the window: a siren or truck fills a minute or two
    "steady_db": 3,  # interquartile range: rain 0.5-1.6 dB, construction 4+
    "lmax_db": 15,  # GB 12523 night LAmax allowance: steady and beyond is work
    "quiet_s": 1800,  # a work break under 30 min is the same episode
    "laeq_max": 130,  # dB(A); above the meter's range is a bad register
    "frozen_s": 300,  # a real level never repeats to 0.1 dB for 5 min
}

NIGHT = ("22:00", "06:00")      # GB 12523-2011 and the noise law: 22:00-06:00
NIGHT_LIMIT_DBA = 55            # GB 12523-2011 Table 1, night, at the site boundary
PERIOD_S = 10                   # edge/profiles/noise.py


def _minutes(hhmm):
    h, _, m = hhmm.partition(":")
    return int(h) * 60 + int(m or 0)


class Detector:
    def __init__(self, site, params, store):
        for name in PARAMS:
            setattr(self, name, params[name])
        night = site.get("night") or NIGHT
        self.night_from = _minutes(night[0])
        self.night_to = _minutes(night[1])
        self.limit = site.get("night_limit_dba") or NIGHT_LIMIT_DBA
        self.off = site.get("utc_offset_s") or 0
        self.alarm = Alarm(0x50, self.quiet_s)   # noise.night_construction
        # the last polls' night levels in half dB, newest at pos; 0 unknown or day
        self.ring = bytearray(max(4, self.window_s // PERIOD_S))
        self.loud2 = int(2 * (self.limit + self.excess_db))
        self.pos = 0
        self.loud = 0
        self.loud_t = None          # first loud poll of the current run of loud windows
        self.frozen = Frozen(0, self.frozen_s)      # field 0: laeq

    def night(self, t):
        m = ((int(t) + self.off) // 60) % 1440
        if self.night_from > self.night_to:         # across midnight
            return m >= self.night_from or m < self.night_to
        return self.night_from <= m < self.night_to

    def _push(self, code):
        self.pos = (self.pos + 1) % len(self.ring)
        if self.ring[self.pos] >= self.loud2:
            self.loud -= 1
        self.ring[self.pos] = code
        if code >= self.loud2:
            self.loud += 1

    def _construction(self):
        """Most of the window loud, and not the steady level of rain: the spread
        between the quartiles of its loud polls (quiet ones left out, so the onset of
        rain is no spread) says so, or a level beyond the LAmax allowance."""
        if self.loud * 100 < len(self.ring) * self.loud_pct:
            return False
        levels = sorted(self.ring)      # a board's sort of 60 bytes, only while loud
        n = len(levels)
        lo = n - self.loud
        q1 = levels[lo + self.loud // 4]
        q3 = levels[lo + 3 * self.loud // 4]
        return q3 - q1 >= 2 * self.steady_db or levels[lo + self.loud // 2] >= 2 * (self.limit + self.lmax_db)

    def step(self, t, r, out):
        v = None if r is None else r.get("laeq")
        if v is not None and (v < 0 or v > self.laeq_max):
            v = None
        if v is not None:
            state = self.frozen.step(t, v, out)
            if state == 2:
                # what was pushed while it repeated was no measurement either
                for i in range(len(self.ring)):
                    self.ring[i] = 0
                self.loud = 0
            if state:
                v = None
        code = 0
        if v is not None and self.night(t):
            code = min(255, max(1, int(2 * v + 0.5)))
        self._push(code)
        on = self._construction()
        if on and self.loud_t is None:
            self.loud_t = t - self.loud * PERIOD_S
        if on:
            self.alarm.update(t, True, out, (v, self.limit, int(t - self.loud_t)))
        elif self.alarm.update(t, False, out, (v, self.limit, 0)) or not self.alarm.active:
            self.loud_t = None
