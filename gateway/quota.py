# Disk quota and retention: keep the event store within --max-db-mb, and delete
# uploaded history after --retention-days. The policy (docs/delivery.md, "Disk quota"):
#
#   1. uploaded (or rejected) events go first, oldest first: the platform has them;
#   2. then pending events of streams whose on_full is drop_oldest (telemetry), lowest
#      priority stream first, oldest first, counted per stream (table dropped, metrics
#      quota.dropped.<stream>, the status page) and logged;
#   3. never pending events of a keep stream (alarms): if only those are left, the
#      gateway keeps accepting them over the quota and says so loudly (state
#      quota_exceeded = 1, an error line every few minutes) — losing an alarm to save
#      disk space is the wrong trade, and the operator can act on the warning.
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from gateway.metrics import Metrics
from gateway.sqlite import DbThread
from gateway.store import Store
from gateway.streams import DROP_OLDEST

log = logging.getLogger(__name__)

LOW_WATER = 0.9          # prune down to 90 % of the quota, so it is not hit again at once
MAX_ROUNDS = 8           # re-measure after each delete: freed pages are not proportional to rows
MIN_ROWS = 100
WARN_EVERY_S = 300.0
CHECK_AFTER_ROWS = 5000  # besides the timer: check after this many new rows


@dataclass
class QuotaConfig:
    max_bytes: int | None = None         # None: no quota
    retention_s: float = 7 * 86400.0     # delete uploaded events this much older; 0: keep forever
    interval_s: float = 5.0              # seconds between checks


@dataclass
class Enforcement:
    used: int
    pruned: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    over: bool = False                   # still over the quota: only keep-stream rows are left


def enforce(store: Store, max_bytes: int) -> Enforcement:
    """Bring the store under max_bytes by the policy above. Blocking: run on the DbThread."""
    used = store.used_bytes()
    result = Enforcement(used)
    if used <= max_bytes:
        return result
    target = int(max_bytes * LOW_WATER)
    # None: settled history; then the droppable streams, lowest priority (highest rank) first
    steps: list[int | None] = [None] + [rank for rank in reversed(range(len(store.streams)))
                                        if store.streams[rank].on_full == DROP_OLDEST]
    for step in steps:
        for _ in range(MAX_ROUNDS):
            used = store.used_bytes()
            rows = store.row_count()
            if used <= target or not rows:
                break
            n = max(MIN_ROWS, math.ceil((used - target) / (used / rows)))
            if step is None:
                got = store.prune_settled(limit=n)
                result.pruned += got
            else:
                got = store.drop_pending(step, n)
                name = store.streams[step].name
                result.dropped[name] = result.dropped.get(name, 0) + got
            if not got:
                break
    result.used = store.used_bytes()
    result.over = result.used > max_bytes
    return result


class Housekeeper:
    """Runs the quota check every interval_s (and after many new rows) and the
    retention prune every hour."""

    def __init__(self, cfg: QuotaConfig, store: Store, db: DbThread, metrics: Metrics,
                 on_delete: Callable[[], None] = lambda: None) -> None:
        self.cfg = cfg
        self.store = store
        self.db = db
        self.metrics = metrics
        self.on_delete = on_delete       # rows were deleted: the upload lanes read again (uplink.py)
        self._wake = asyncio.Event()
        self._new_rows = 0
        self._warned_at = -math.inf
        self.metrics.set_state("quota_exceeded", 0)

    def note_inserted(self, n: int) -> None:
        self._new_rows += n
        if self._new_rows >= CHECK_AFTER_ROWS and self.cfg.max_bytes is not None:
            self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_retention = loop.time()
        while True:
            if self.cfg.retention_s and loop.time() >= next_retention:
                await self.prune_retention()
                next_retention = loop.time() + 3600.0
            if self.cfg.max_bytes is not None:
                await self.check_quota()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.cfg.interval_s)
            except asyncio.TimeoutError:
                pass

    async def prune_retention(self) -> int:
        n = await self.db.call(self.store.prune_settled, time.time() - self.cfg.retention_s)
        if n:
            self.on_delete()
            self.metrics.inc("store.retention_pruned", n)
            log.info("deleted %d events uploaded more than %.1f days ago", n, self.cfg.retention_s / 86400)
        return n

    async def check_quota(self) -> Enforcement:
        assert self.cfg.max_bytes is not None
        self._new_rows = 0
        r = await self.db.call(enforce, self.store, self.cfg.max_bytes)
        self.metrics.set_state("store_used_bytes", r.used)
        self.metrics.inc("quota.pruned", r.pruned)
        for name, n in r.dropped.items():
            self.metrics.inc("quota.dropped." + name, n)
        if r.pruned or r.dropped:
            self.on_delete()
            log.warning("store over its quota of %.1f MB: deleted %d uploaded events%s; %.1f MB in use",
                        self.cfg.max_bytes / 1e6, r.pruned,
                        "".join(", DROPPED %d pending %s events" % (n, name)
                                for name, n in r.dropped.items() if n),
                        r.used / 1e6)
        self._over(r)
        return r

    def _over(self, r: Enforcement) -> None:
        was = self.metrics.states.get("quota_exceeded") == 1
        if r.over != was:
            self.metrics.set_state("quota_exceeded", int(r.over))
        if not r.over:
            if was:
                log.info("store back under its quota: %.1f MB in use", r.used / 1e6)
            return
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.error("STORE OVER QUOTA: %.1f MB in use, quota %.1f MB, and only events that are never"
                      " dropped (alarms, reports) are left pending. Still accepting them. Bring the platform"
                      " back, free disk space or raise --max-db-mb.",
                      r.used / 1e6, (self.cfg.max_bytes or 0) / 1e6)
