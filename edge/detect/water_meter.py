# Household water meter detectors: inactivity of a resident living alone (judged
# against the household's learned habit, edge/habit.py), water running without pause,
# a small leak that never stops, and meter faults that persist. The meter lies now and
# then (one absurd total, a flow spike, a total that steps back for one poll), so every
# fact here is confirmed by a second reading or by the other register before it counts.
# Why each rule and number: docs/detectors-water.md.
from edge.alarm import Alarm
from edge.codes import REPORT
from edge.habit import Habit

# name: default,  # why (one line); the full reasoning per entry is in
# docs/detectors-water.md. Reasons are comments so they cost no RAM on a board.
PARAMS = {
    "flow_max": 5.0,  # m3/h; above a DN20 meter's Q4 is a bad register
    "use_flow": 0.1,  # m3/h; slowest tap; leaks run below it
    "spike_flow": 2.5,  # m3/h; a lone poll above a DN15 tap's Q3 is a spike
    "inact_max_s": 42300,  # 12 h limit less poll lag and gaps
    "inact_min_s": 42300,  # unlearned spells elsewhere run past 11 h
    "inact_factor_pct": 125,  # spell may run 25 % over the usual
    "inact_margin_s": 3600,  # plus an hour for a late riser
    "inact_spread_h": 1,  # habits drift across the hour
    "learn_days": 7,  # days before the model is trusted
    "habit_save_s": 3600,  # flash writes at most hourly
    "cf_s": 4200,  # normal use stops by 50 min
    "cf_pause_s": 150,  # two flickering zeros do not end a run
    "leak_flow": 0.002,  # m3/h; the meter's starting flow
    "leak_s": 21600,  # every household has a still hour in 6 h
    "leak_pause_s": 900,  # a leak reading zero briefly is flicker
    "leak_duty_pct": 90,  # share of polls with flow in a leak
    "glitch_persist_s": 600,  # a lasting step back is a reset meter
    "frozen_vol": 0.05,  # m3 claimed by flow while the total stood still
}

# m3 of volume the total may lag behind the integrated flow before a run is "unconfirmed"
_CONFIRM = 0.5


class _Run:
    """Water flowing at or above a level, allowing pauses shorter than pause_s: start
    time, polls seen and polls flowing, the lowest flow, and the volume the flow
    register claims (to be checked against the total)."""

    def __init__(self):
        self.start = None
        self.x_last = None

    def feed(self, t, f, dt, gap, x, level, pause_s, ref):
        """f None = flow unknown on this poll; gap = seconds since the last answered
        poll, x = this poll's raw total. Returns True when a run just ended."""
        ended = False
        if self.start is not None and gap > pause_s:
            # the meter was silent longer than a pause: the run only went on if the
            # total moved meanwhile and water still flows now
            moved = x is not None and self.x_last is not None and x - self.x_last > 0
            if not (moved and f is not None and f >= level):
                self.start = None
                ended = True
        if f is not None and f >= level:
            if self.start is None:
                self.start = t
                self.n = self.k = 0
                self.fmin = f
                self.vol = 0.0
                self.ref0 = ref
            self.last = t
            self.k += 1
            if f < self.fmin:
                self.fmin = f
        elif self.start is not None and f is not None and t - self.last >= pause_s:
            self.start = None
            return True
        if self.start is not None:
            if f is not None:
                self.n += 1
                self.vol += f * dt / 3600
            if self.ref0 is None:
                self.ref0 = ref
        if x is not None:
            self.x_last = x
        return ended

    def skip(self, jump):
        # a jump of the total that is no use of water (a frozen register catching up)
        # confirms no flow either
        if self.start is not None and self.ref0 is not None:
            self.ref0 += jump

    def confirmed(self, ref, res):
        # the total must have moved with the flow: a flow register stuck on a value
        # while the total stands still is a meter fault, not water
        if ref is None or self.ref0 is None:
            return False
        return ref - self.ref0 >= _CONFIRM * self.vol - 2 * res


class Detector:
    def __init__(self, site, params, store):
        # the parameters as attributes (self.cf_s), read on every poll: the merged dict
        # need not stay in RAM, and the attribute names intern the PARAMS keys as qstrs,
        # so the keys cost no string objects either
        for name in PARAMS:
            setattr(self, name, params[name])
        self.res = site.get("resolution") or 0.001
        self.off = site.get("utc_offset_s") or 0
        self.store = store
        data = store.load("water_habit") if store is not None else None
        self.habit = Habit(data)
        self.saved_use, self.saved_total = self.habit.clock()
        # codes by number, as the profiles give theirs: a board holds each name once, in edge/codes.py
        self.inact = Alarm(0x30)            # water.inactivity
        self.cf = Alarm(0x31)               # water.continuous_flow
        self.leak = Alarm(0x32)             # water.leak
        self.glitch = Alarm(0x33, 3600)     # water.meter_glitch
        self.cf_run = _Run()
        self.leak_run = _Run()
        self.glitches = 0           # single-sample glitches ridden through, for diagnostics
        # trusted total and a step waiting for a second reading to confirm it
        self.ref = None
        self.ref_t = None
        self.pend = None
        self.pend_t = None
        self.back_since = None
        self.prev_t = None          # last answered poll
        self.prev_flowing = False
        self.still_t = None         # the trusted total last moved (frozen-register watch)
        self.still_vol = 0.0        # m3 the flow register claimed since
        self.still_n = 0            # polls with flow since
        self.frozen = False         # reported this episode
        self.last_use = None
        self.day = None
        self.covered = 0
        self.dirty = False
        self.saved_t = None

    # ---------------------------------------------------------------- helpers
    def _hour(self, t):
        return ((int(t) + self.off) // 3600) % 24

    def threshold(self, hour):
        """Seconds of dryness after a last use in local hour `hour` that make an alarm."""
        cap = self.inact_max_s
        if self.habit.days() < self.learn_days:
            return cap
        usual = self.habit.usual_s(hour, self.inact_spread_h)
        if usual is None:
            return cap
        thr = usual * self.inact_factor_pct // 100 + self.inact_margin_s
        return max(self.inact_min_s, min(cap, thr))

    def _plausible(self, dt):
        return self.flow_max * dt / 3600 + 2 * self.res

    def _total(self, t, x, out):
        """Feed one total reading; returns (confirmed increase in m3, when it showed)."""
        tol = self.res / 2
        if self.ref is None:
            # the first total after a boot becomes the reference only when the next one
            # agrees with it: a glitch in the very first reading must not become the
            # reference every true reading then "steps back" from. Until then it waits
            # in pend, so nothing is judged on it.
            c = self.pend
            if c is None or not c - tol <= x <= c + self._plausible(t - self.pend_t):
                self.pend = x
                self.pend_t = t
                return 0.0, t
            self.ref = c
            self.ref_t = self.pend_t
            self.pend = None
        if x < self.ref - tol:
            # backwards: one poll of it is a glitch; a lasting one is a reset meter
            self.pend = None
            if self.back_since is None:
                self.back_since = t
                self.glitches += 1
            elif t - self.back_since >= self.glitch_persist_s:
                self.glitch.update(t, True, out, (1, x))
                self.ref = x
                self.ref_t = t
                self.back_since = None
            return 0.0, t
        self.back_since = None
        gain = 0.0
        when = t
        if self.pend is not None:
            p = self.pend
            if p - tol <= x <= p + self._plausible(t - self.pend_t):
                # two readings agree: the step was real
                if p - self.ref <= self._plausible(self.pend_t - self.ref_t):
                    gain = p - self.ref
                    when = self.pend_t
                else:
                    self.glitches += 1     # a jump that stayed: follow it, but it is no use of water
                    self.cf_run.skip(p - self.ref)
                    self.leak_run.skip(p - self.ref)
                self.ref = p
                self.ref_t = self.pend_t
            else:
                self.glitches += 1
            self.pend = None
        if x > self.ref + tol:
            self.pend = x
            self.pend_t = t
        else:
            self.ref_t = t
        return gain, when

    def _new_day(self, t):
        day = (int(t) + self.off) // 86400
        if self.day is None:
            self.day = day
        elif day != self.day:
            self.day = day
            if self.covered >= 43200:
                self.habit.add_day()
                self._save(t, True)
            self.covered = 0

    def _save(self, t, force):
        if self.store is None:
            return
        if not force and (not self.dirty or (self.saved_t is not None and t - self.saved_t < self.habit_save_s)):
            return
        self.habit.set_clock(self.last_use, self.ref)
        self.store.save("water_habit", self.habit.to_bytes())
        self.saved_t = t
        self.dirty = False

    def _used(self, t):
        """Water was used at t: learn the dry spell that ended, clear inactivity."""
        if self.last_use is not None and t > self.last_use:
            spell = t - self.last_use
            if spell > self.inact_max_s:
                spell = self.inact_max_s
            if self.habit.learn(self._hour(self.last_use), spell) >= 3:
                self._save(t, True)     # a new long habit: keep it across a reboot now
            self.last_use = t
            self.dirty = True

    # ---------------------------------------------------------------- step
    def step(self, t, r, out):
        # split in short methods: on a fragmented heap a long function's bytecode is
        # one contiguous block that may not fit
        self._new_day(t)
        if r is None:
            return      # a failed poll is unknown, never zero: nothing is judged on it
        gap = 0 if self.prev_t is None else t - self.prev_t
        dt = gap if gap < 600 else 600
        self.prev_t = t
        self.covered += dt
        f = r.get("flow")
        if f is not None and (f < 0 or f > self.flow_max):
            f = None
            self.glitches += 1
        x = r.get("total")
        ref = self.ref
        gain, when = (0.0, t) if x is None else self._total(t, x, out)
        self._frozen(t, f, dt, ref, x, out)
        if self.last_use is None and x is not None:
            self._boot_clock(t, x)
        # runs of flow first: a leak's own flow is no sign of the resident
        self._runs(t, f, dt, gap, x, out)
        self._use(t, f, x, gain, when, out)
        self._alarms(t, f, out)
        self._save(t, False)

    def _boot_clock(self, t, x):
        # after a boot: an unchanged total proves no water was used while we were off
        if self.saved_use is not None and abs(x - self.saved_total) <= self.res / 2 and self.saved_use <= t:
            self.last_use = self.saved_use
        else:
            self.last_use = t

    def _runs(self, t, f, dt, gap, x, out):
        if self.cf_run.feed(t, f, dt, gap, x, self.use_flow, self.cf_pause_s, self.ref):
            self.cf.update(t, False, out, (int(t - self.cf_run.last), 0))
        if self.leak_run.feed(t, f, dt, gap, x, self.leak_flow, self.leak_pause_s, self.ref):
            self.leak.update(t, False, out, (0, 0))

    def _use(self, t, f, x, gain, when, out):
        """Use of water: a total step beyond what a leak explains, or flow on two polls
        (a flow spike is one poll). Then judge inactivity."""
        base = 0.0
        lr = self.leak_run
        if lr.start is not None and t - lr.start >= 3600 and lr.fmin < self.use_flow:
            base = lr.fmin
        flowing = f is not None and f >= self.use_flow + base
        use_t = None
        # (a leak adds at most two polls' worth to one confirmed step)
        if gain > 0 and gain - base * 120 / 3600 >= (2 if base > 0 else 0.5) * self.res:
            use_t = when
        # a lone poll of tap-sized flow is a short use too: a meter counting 10 L steps
        # (or a frozen total) shows it in the flow register only; a spike is larger
        if flowing and (self.prev_flowing or gain > 0 or f < self.spike_flow):
            use_t = t
        self.prev_flowing = flowing
        if self.last_use is None:
            return
        if use_t is not None:
            self._used(max(use_t, self.last_use))
            self.inact.update(t, False, out, (0, 0))
        # judged only on a poll whose total is known and settled
        if x is not None and self.pend is None:
            idle = t - self.last_use
            thr = self.threshold(self._hour(self.last_use))
            if idle >= thr:
                self.inact.update(t, True, out, (int(idle), int(thr)))

    def _frozen(self, t, f, dt, ref, x, out):
        """A total register that stopped counting while the flow register shows water
        (it catches up hours later): a device-health fact, one device.sensor_health
        report (kind 1 frozen register, field 0 total) per episode, never an alarm. The
        flow alarms already wait for the total to confirm them. Only polls that read the
        total count: one that could not be read says nothing about its counting."""
        if self.ref is None or self.ref != ref or self.pend is not None:
            self.still_t = t
            self.still_vol = 0.0
            self.still_n = 0
            self.frozen = False
            return
        if x is None:
            return
        if f is not None and f >= self.leak_flow:
            self.still_vol += f * dt / 3600
            self.still_n += 1
        if not self.frozen and self.still_n >= 3 and self.still_vol >= self.frozen_vol + 4 * self.res:
            self.frozen = True
            out.append((t, 0x15, REPORT, (1, 0, int(t - self.still_t))))   # device.sensor_health

    def _alarms(self, t, f, out):
        """Running without pause, and a small flow that never stops."""
        cr = self.cf_run
        lr = self.leak_run
        if cr.start is not None and t - cr.start >= self.cf_s and cr.confirmed(self.ref, self.res):
            self.cf.update(t, True, out, (int(t - cr.start), f))
        if (lr.start is not None and t - lr.start >= self.leak_s and lr.fmin < self.use_flow
                and lr.k * 100 >= lr.n * self.leak_duty_pct and lr.confirmed(self.ref, self.res)):
            self.leak.update(t, True, out, (int(t - lr.start), lr.fmin))
        if self.glitch.active and self.back_since is None:
            self.glitch.update(t, False, out, (0, self.ref))
