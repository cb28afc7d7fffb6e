# Uplink: drain the store's upload queues to the district platform over HTTP.
#
# POST {platform}/v1/events  {"gateway": id, "events": [...]}  (docs/platform-api.yaml)
#
# One lane per stream (gateway/streams.py), each with its own request loop on a shared
# connection pool: an alarm never waits behind a telemetry batch on the wire, and a
# telemetry backlog after an outage drains at the stream's rate limit while alarms go
# at once. A lane sends when its batch is full (batch_max) or its oldest event is
# batch_age old (0 for alarms: at once). Every event has a stable id
# (<device>:<boot>:<seq>) and the platform stores by id, so a retry after a lost
# response cannot create a duplicate; the Idempotency-Key header (a hash of the ids)
# lets a platform or a proxy recognise a repeated request as a whole.
from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import aiohttp

from gateway.metrics import Metrics
from gateway.sqlite import DbThread
from gateway.store import CommitResult, EventRow, PendingEvent, Store
from gateway.streams import DEFAULT_STREAMS, Stream

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
USER_AGENT = "citynet-edge-gateway/0.1"
# 408 and 429 say "later", not "never".
RETRY_STATUSES = {408, 429}
# These say the gateway is misconfigured (wrong URL, credentials), not that the events
# are bad: rejecting would throw away every event in turn, so retry and log it loudly.
CONFIG_STATUSES = {401, 403, 404, 405}


@dataclass
class UplinkConfig:
    platform_url: str
    gateway_id: str
    streams: tuple[Stream, ...] = DEFAULT_STREAMS
    timeout: float = 10.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    gzip_min: int = 8192             # compress bodies from this size on


class Outcome(Enum):
    DONE = "done"                    # uploaded, or rejected for good
    RETRY = "retry"                  # platform unreachable or failing: back off


def upload_json(row: EventRow) -> dict[str, Any]:
    """One event as the platform API carries it."""
    return {"id": row.id, "device": row.device, "boot": row.boot, "seq": row.seq,
            "type": row.type, "action": row.action, "t": row.t, "clock_set": row.clock_set,
            "values": row.values}


def idempotency_key(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]


class Lane:
    """The upload loop of one stream."""

    def __init__(self, uplink: "Uplink", rank: int, stream: Stream) -> None:
        self.uplink = uplink
        self.rank = rank
        self.stream = stream
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()          # set while no request of this lane is on the wire
        self.idle.set()

    async def run(self, http: aiohttp.ClientSession) -> None:
        up, s = self.uplink, self.stream
        loop = asyncio.get_running_loop()
        backoff = up.cfg.backoff_min
        next_at = 0.0                        # rate limit: loop time before which no batch goes
        while True:
            # cleared before the query: a notify() that lands after it wakes the wait below
            self.wake.clear()
            batch = await up.db.call(up.store.next_batch, self.rank, s.batch_max)
            if not batch:
                await self.wake.wait()
                continue
            hold = self._hold_for(batch)
            if hold > 0:
                await _wait(self.wake, hold)
                continue
            if next_at > loop.time():
                # paced: sleep, then read the batch again (the quota may have dropped rows)
                await asyncio.sleep(next_at - loop.time())
                continue
            self.idle.clear()
            started = loop.time()
            try:
                outcome = await up.deliver(http, batch, s.name)
            finally:
                self.idle.set()
            if outcome is Outcome.RETRY:
                # jitter: gateways that lost the platform together do not return in step
                delay = backoff * random.uniform(0.8, 1.2)
                backoff = min(backoff * 2, up.cfg.backoff_max, s.retry_max)
                if s.batch_age > 0:
                    await asyncio.sleep(delay)
                else:
                    # a stream sent at once (alarms) also tries at once when a new event
                    # comes, so the first alarm after an outage does not sit out the
                    # backoff; never sooner than backoff_min after the last attempt
                    await asyncio.sleep(min(delay, up.cfg.backoff_min))
                    self.wake.clear()
                    await _wait(self.wake, delay - up.cfg.backoff_min)
                continue
            backoff = up.cfg.backoff_min
            if s.rate:
                # from the send, not the answer: the request's own time counts against the pace
                next_at = max(next_at, started) + len(batch) / s.rate

    def _hold_for(self, batch: list[PendingEvent]) -> float:
        """Seconds to wait for a fuller batch; 0 to send now."""
        if len(batch) >= self.stream.batch_max or self.stream.batch_age <= 0:
            return 0.0
        oldest = min(p.received_at for p in batch)
        return self.stream.batch_age - (time.time() - oldest)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass   # the batch is due


class Uplink:
    def __init__(self, cfg: UplinkConfig, store: Store, db: DbThread, metrics: Metrics) -> None:
        self.cfg = cfg
        self.url = cfg.platform_url.rstrip("/") + EVENTS_PATH
        self.store = store
        self.db = db
        self.metrics = metrics
        self.lanes = [Lane(self, rank, s) for rank, s in enumerate(cfg.streams)]
        self._failing_since: float | None = None
        self._failures = 0
        self.metrics.set_state("platform_ok", 1)

    def notify(self, result: CommitResult | None = None) -> None:
        """New events are in the store (ingest calls this after each commit)."""
        for lane in self.lanes:
            if result is None or (lane.rank < len(result.by_rank) and result.by_rank[lane.rank]):
                lane.wake.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": USER_AGENT}) as http:
            await asyncio.gather(*(lane.run(http) for lane in self.lanes))

    async def finish_request(self, timeout: float) -> None:
        """Before a stop: let requests on the wire get their answer, so what the platform
        took is marked uploaded and not sent again after the restart."""
        try:
            await asyncio.wait_for(asyncio.gather(*(lane.idle.wait() for lane in self.lanes)), timeout)
        except asyncio.TimeoutError:
            log.info("stopping during an upload; its events will be sent again after the restart")

    async def deliver(self, http: aiohttp.ClientSession, batch: list[PendingEvent],
                      stream: str) -> Outcome:
        """POST a batch; on a content error split it to isolate the bad events."""
        status, text = await self._post(http, batch)
        if status is not None and 200 <= status < 300:
            await self.db.call(self.store.mark_uploaded, [p.row for p in batch])
            self.metrics.inc("uplink.events", len(batch))
            self.metrics.inc("uplink.events." + stream, len(batch))
            self.metrics.inc("uplink.batches")
            self._reachable()
            return Outcome.DONE
        if status is None or status >= 500 or status in RETRY_STATUSES:
            self._unreachable(text if status is None else "HTTP %d %s" % (status, text[:200]))
            return Outcome.RETRY
        if status in CONFIG_STATUSES:
            self._unreachable("HTTP %d %s: check --platform and the platform's access for"
                              " gateway %s" % (status, text[:200], self.cfg.gateway_id))
            return Outcome.RETRY
        # Any other 4xx: something in this batch is unacceptable. A single bad event must
        # not sink the other 499, so halve until the bad ones are alone, then reject those.
        self._reachable()
        if len(batch) > 1:
            half = len(batch) // 2
            for part in (batch[:half], batch[half:]):
                if await self.deliver(http, part, stream) is Outcome.RETRY:
                    return Outcome.RETRY
            return Outcome.DONE
        reason = "HTTP %d %s" % (status, text[:300])
        await self.db.call(self.store.mark_rejected, [batch[0].row], reason)
        self.metrics.inc("uplink.rejected")
        log.error("platform rejected event %s: %s; kept in the store as rejected, not retried",
                  batch[0].row.id, reason)
        return Outcome.DONE

    async def _post(self, http: aiohttp.ClientSession,
                    batch: list[PendingEvent]) -> tuple[int | None, str]:
        """(HTTP status, body text), or (None, what went wrong) when there was no answer."""
        events = [upload_json(p.row) for p in batch]
        body = json.dumps({"gateway": self.cfg.gateway_id, "events": events},
                          separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": idempotency_key([e["id"] for e in events])}
        if len(body) >= self.cfg.gzip_min:
            body = gzip.compress(body, 6)
            headers["Content-Encoding"] = "gzip"
        self.metrics.inc("uplink.requests")
        try:
            async with http.post(self.url, data=body, headers=headers) as resp:
                return resp.status, await resp.text()
        except asyncio.TimeoutError:
            return None, "no answer within %.0f s" % self.cfg.timeout
        except aiohttp.ClientError as e:
            return None, "%s: %s" % (type(e).__name__, e)

    def _unreachable(self, why: str) -> None:
        self.metrics.inc("uplink.failures")
        self._failures += 1
        if self._failing_since is None:
            # one line when the state changes, not one per retry
            self._failing_since = time.monotonic()
            self.metrics.set_state("platform_ok", 0)
            log.warning("platform %s unavailable (%s); events stay in the store, retrying with"
                        " backoff up to %.0f s", self.url, why, self.cfg.backoff_max)

    def _reachable(self) -> None:
        if self._failing_since is not None:
            log.info("platform %s reachable again after %.1f s and %d failed attempts",
                     self.url, time.monotonic() - self._failing_since, self._failures)
            self._failing_since = None
            self._failures = 0
            self.metrics.set_state("platform_ok", 1)
