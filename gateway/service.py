# The gateway service: wires registry, store, broker, ingest, uplink, the overdue watch
# (supervision) and the status page together, starts and stops them in order, and stops
# as a whole when one part dies (so a supervisor restarts it) instead of limping on
# without it.
#
#   async with Gateway(GatewayConfig(data_dir=..., platform_url=...)) as gw:
#       await gw.metrics.wait_until(lambda: gw.metrics.get("ingest.stored") >= 3, 5)
from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge import ids
from gateway import auth
from gateway.broker import BrokerAddress, parse_broker_url, parse_listen
from gateway.hj212_uplink import Hj212Config, Hj212Uplink
from gateway.http import HttpServer
from gateway.ingest import Ingest
from gateway.metrics import Metrics
from gateway.mqtt import MQTT311, VERSIONS
from gateway.quota import Housekeeper, QuotaConfig
from gateway.registry import Registry
from gateway.sqlite import DbThread
from gateway.status import StatusSource, exposure, status_routes
from gateway.store import CommitResult, Store
from gateway.streams import DEFAULT_STREAMS, Stream
from gateway.supervision import INTERVAL_DAYS, Supervisor
from gateway.uplink import Uplink, UplinkConfig

if TYPE_CHECKING:
    from gateway.embedded_broker import EmbeddedBroker

log = logging.getLogger(__name__)

EMBEDDED = "embedded"


@dataclass
class GatewayConfig:
    data_dir: Path
    platform_url: str = "http://127.0.0.1:8080"
    broker: str = EMBEDDED             # or mqtts://[user@]host[:port], mqtt://... (gateway/broker.py)
    listen: str = "127.0.0.1:1883"     # the embedded broker's address; port 0 picks one
    broker_ca: str | None = None       # mqtts://: the CA file of the broker's certificate; None: the system's
    broker_password: str | None = field(default=None, repr=False)   # never in the URL, never printed
    insecure_plain_mqtt: bool = False  # allow plain MQTT to a broker (or an embedded listener) off loopback
    gateway_id: str = socket.gethostname()
    client_id: str | None = None       # MQTT client id; default edge-gateway-<gateway_id>
    share_group: str | None = None     # subscribe as $share/<group>/... to split load
    mqtt_version: str | None = None    # "5" or "3.1.1"; default: 3.1.1 for embedded (amqtt), else 5
    streams: tuple[Stream, ...] = DEFAULT_STREAMS
    upload_timeout: float = 10.0       # seconds for one upload request, answer included
    backoff_min: float = 0.5           # upload retry delays, doubling up to backoff_max
    backoff_max: float = 30.0
    max_db_mb: float | None = None     # disk quota of the event store (gateway/quota.py); None: none
    retention_days: float = 7.0        # uploaded events are deleted after this; 0: kept forever
    status_listen: str | None = None   # host:port of the status page, None for none
    status_logins: str | None = None   # its logins file (gateway/login.py); required off loopback
    status_cert: str | None = None     # its HTTPS certificate and key (PEM); required off loopback
    status_key: str | None = None      #   unless insecure_plain_status
    insecure_plain_status: bool = False
    platform_credentials: Path | None = None   # gateway id + secret; None: <data_dir>/platform-credentials.json
    platform_ca: str | None = None     # https://: the CA file the platform's certificate must chain to
    insecure_plain_http: bool = False  # allow http:// to a platform off loopback
    hj212: Hj212Config | None = None   # the HJ 212 uplink (gateway/hj212_uplink.py); None: off
    maintenance_interval_days: float = INTERVAL_DAYS   # elevator.maintenance_overdue after this long without a session


class Gateway:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.registry: Registry | None = None
        self.store: Store | None = None
        self.db = DbThread("gateway-db")
        self.broker: EmbeddedBroker | None = None
        self.broker_address: BrokerAddress | None = None
        self.ingest: Ingest | None = None
        self.uplink: Uplink | None = None
        self.hj212: Hj212Uplink | None = None
        self.housekeeper: Housekeeper | None = None
        self.supervisor: Supervisor | None = None
        self.status_url: str | None = None
        self._status_server: HttpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # set with the reason when a part dies; run_gateway() stops on it
        self.failed: asyncio.Future[str] | None = None

    async def start(self) -> None:
        """Start every part; on any error stop what was started and re-raise.

        Raises RegistryError (bad devices.json) or BrokerError (broker unreachable).
        """
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.cfg
        self.failed = asyncio.get_running_loop().create_future()
        self.registry = Registry.in_dir(cfg.data_dir)
        if not len(self.registry):
            log.warning("no devices in %s: every event will be rejected until one is added with"
                        " `edge-gateway devices add`", self.registry.path)
        self.store = await self.db.call(Store.in_dir, cfg.data_dir, cfg.streams)
        if cfg.broker == EMBEDDED:
            from gateway.embedded_broker import EmbeddedBroker   # amqtt only when it is used
            self.broker = EmbeddedBroker(cfg.listen, self.registry, cfg.insecure_plain_mqtt)
            self.broker_address = await self.broker.start()
        else:
            self.broker_address = parse_broker_url(cfg.broker, cfg.broker_password, cfg.broker_ca,
                                                   cfg.insecure_plain_mqtt)
            self.broker_address.ssl_context()   # a bad CA file stops the start here
        # amqtt 0.12 speaks MQTT 3.1.1 only
        version = VERSIONS[cfg.mqtt_version] if cfg.mqtt_version else (
            MQTT311 if cfg.broker == EMBEDDED else VERSIONS["5"])
        self.uplink = Uplink(UplinkConfig(cfg.platform_url, cfg.gateway_id, cfg.streams,
                                          credentials=self._platform_credentials(),
                                          ca_file=cfg.platform_ca, insecure_plain_http=cfg.insecure_plain_http,
                                          timeout=cfg.upload_timeout, backoff_min=cfg.backoff_min,
                                          backoff_max=cfg.backoff_max),
                             self.store, self.db, self.metrics)
        quota = QuotaConfig(None if cfg.max_db_mb is None else int(cfg.max_db_mb * 1e6),
                            cfg.retention_days * 86400.0)
        self.housekeeper = Housekeeper(quota, self.store, self.db, self.metrics,
                                       on_delete=self.uplink.forget)
        self.ingest = Ingest(self.broker_address, cfg.client_id or ids.GATEWAY_CLIENT_PREFIX + cfg.gateway_id,
                             self.registry, self.store, self.db, self.metrics,
                             on_commit=self._committed, share_group=cfg.share_group,
                             mqtt_version=version)
        self._watch(await self.ingest.start())
        self._watch(asyncio.create_task(self.uplink.run(), name="uplink"))
        self._watch(asyncio.create_task(self.housekeeper.run(), name="housekeeping"))
        if cfg.hj212 is not None:
            self.hj212 = Hj212Uplink(cfg.hj212, self.store, self.db, self.metrics)
            self._watch(asyncio.create_task(self.hj212.run(), name="hj212"))
        # the registry's devices as ingest last reloaded them
        self.supervisor = Supervisor(self.store, self.db, self.metrics, self.registry.devices,
                                     cfg.maintenance_interval_days, on_commit=self._committed)
        await self.db.call(self.supervisor.create_tables)
        self._watch(asyncio.create_task(self.supervisor.run(), name="supervision"))
        if cfg.status_listen:
            await self._start_status(cfg.status_listen)
        log.info("gateway %s running: data %s, broker %s, platform %s", cfg.gateway_id,
                 cfg.data_dir, self.broker_address.url, cfg.platform_url)

    def _platform_credentials(self) -> auth.Credentials | None:
        """Raises CredentialsError: a file that is not there (when named), unreadable, open
        to others, or for another gateway id."""
        path = self.cfg.platform_credentials or self.cfg.data_dir / auth.FILENAME
        if self.cfg.platform_credentials is None and not path.exists():
            return None                    # the uplink warns: every upload will be refused
        creds = auth.Credentials.load(path)
        if creds.gateway != self.cfg.gateway_id:
            raise auth.CredentialsError("%s: the credentials are for gateway %s, but this gateway's id is %s"
                                        " (--gateway-id)" % (path, creds.gateway, self.cfg.gateway_id))
        return creds

    async def _start_status(self, listen: str) -> None:
        """Raises StatusError (beyond loopback without logins or TLS), OSError (the port)."""
        cfg = self.cfg
        host, port = parse_listen(listen, 8081)
        logins, tls = exposure(host, cfg.status_logins, cfg.status_cert, cfg.status_key, cfg.insecure_plain_status)
        source = StatusSource(cfg.gateway_id, self.metrics, self.db, lambda: self.store,
                              lambda: self.registry.devices() if self.registry is not None else [],
                              lambda: self.uplink.state() if self.uplink is not None else {},
                              self.uplink.review if self.uplink is not None else None)
        self._status_server = HttpServer(status_routes(source),
                                         authorize=(lambda req: logins.check(req.headers.get("authorization")))
                                         if logins is not None else None)
        port = await self._status_server.start(host, port, tls)
        self.status_url = "%s://%s:%d" % ("https" if tls else "http", host, port)
        log.info("status page on %s%s", self.status_url, " (logins required)" if logins else "")

    def _watch(self, task: asyncio.Task[None]) -> None:
        """A part's task ending on its own is a failure of the whole gateway."""
        def done(t: asyncio.Task[None]) -> None:
            if t.cancelled():
                return
            exc = t.exception()
            why = "%s stopped: %r" % (t.get_name(), exc)
            self.metrics.inc("gateway.part_failures")
            log.error("%s; stopping the gateway", why, exc_info=exc)
            if self.failed is not None and not self.failed.done():
                self.failed.set_result(why)
        task.add_done_callback(done)
        self._tasks.append(task)

    def _committed(self, result: CommitResult) -> None:
        if result.inserted and self.uplink is not None:
            self.uplink.notify(result)
        if result.inserted and self.hj212 is not None:
            self.hj212.notify()
        if result.inserted and self.housekeeper is not None:
            self.housekeeper.note_inserted(result.inserted)

    async def store_counts(self) -> dict[str, int]:
        assert self.store is not None
        return await self.db.call(self.store.counts)

    async def stream_counts(self) -> dict[str, dict[str, int]]:
        assert self.store is not None
        return await self.db.call(self.store.stream_counts)

    async def stop(self) -> None:
        """Stop in dependency order: take no more messages, commit and ack what came,
        stop uploading, then close the broker and the database."""
        if self._status_server is not None:
            await self._status_server.close()
            self._status_server = None
        if self.ingest is not None:
            await self.ingest.stop()
            self.ingest = None
        if self.uplink is not None:
            await self.uplink.finish_request(self.uplink.cfg.timeout / 2)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:
                pass   # logged and counted by the _watch callback when it ended
        self._tasks.clear()
        if self.broker is not None:
            await self.broker.stop()
            self.broker = None
        if self.store is not None:
            counts = await self.db.call(self.store.counts)
            log.info("gateway stopped; store: %(stored)d events, %(uploaded)d uploaded,"
                     " %(rejected)d rejected, %(pending)d pending (sent after the next start),"
                     " %(dropped)d dropped by the quota", counts)
            await self.db.call(self.store.close)
            self.store = None
        self.db.close()

    async def __aenter__(self) -> "Gateway":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _stopped(stop: asyncio.Event) -> str:
    await stop.wait()
    return "stop requested"


async def run_gateway(cfg: GatewayConfig, stop: asyncio.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM (or stop is set); 0 on a clean stop, 1 if a part failed."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gw = Gateway(cfg)
    try:
        await gw.start()
        assert gw.failed is not None
        stopper = asyncio.ensure_future(_stopped(stop))
        try:
            await asyncio.wait([stopper, gw.failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            log.info("gateway stopping")
            await gw.stop()
        return 1 if gw.failed.done() else 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
