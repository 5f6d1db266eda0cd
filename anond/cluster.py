"""Scale-out on NATS JetStream: intakes publish claimed jobs, workers on any host pull them.

    intake  (role all|intake): watch ▶ claim (the claim folder stays the fence) ▶ job table
            (pending) ▶ publish {v, job, inbox, owner, kind, bytes} ▶ job table (published)
    stream  work-queue stream `cluster.stream`, subject `cluster.subject`, messages deduplicated
            by job id; one durable pull consumer (explicit ack, AckWait, MaxDeliver)
    worker  (role all|worker): fetch as many messages as it has free slots ▶ run the job in the
            intake's claim (`<inbox>/.anond/claims/<owner>/<job>`) ▶ commit through the staged
            link + `committed` marker, behind a commit token (`Claim.take_commit`) ▶ ack.
            In-progress acks while it runs; a transient failure is a nak with its backoff; a
            delivery past max_deliver quarantines the input (max_deliveries) instead of running.

Guarantees: at-least-once processing (a worker that dies or stalls past AckWait has its job
delivered again), exactly-once output (the claim's commit token and marker). Messages hold
no file name and no path: the claim folder is found from the inbox name, owner and job id.

NATS's client is asyncio: it runs in a thread of its own with its loop; the service's
threads hand it work through `asyncio.run_coroutine_threadsafe`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

from .config import absolute

MESSAGE_VERSION = 1
FETCH_WAIT_S = 1.0
STATS_EVERY_S = 5.0
HEARTBEAT_BUCKET = "anond_workers"


@dataclass
class Stats:
    """The stream's view, refreshed every STATS_EVERY_S (gauges; `anond status`)."""

    connected: bool = False
    queued: int = 0  # messages not yet delivered
    in_flight: int = 0  # delivered, not acknowledged (all workers)
    redelivered: int = 0
    published: int = 0  # by this instance, since start
    quarantined: int = 0  # max_deliveries, by this instance
    workers: dict = field(default_factory=dict)  # instance -> {role, in_flight, at}


def connect_options(cfg, name: str) -> dict:
    """nats.connect() keyword arguments from [cluster] (credentials, TLS)."""
    opts: dict = {"servers": list(cfg.servers), "name": name, "connect_timeout": 2,
                  "reconnect_time_wait": 1, "max_reconnect_attempts": -1, "allow_reconnect": True}
    if cfg.token:
        opts["token"] = cfg.token
    if cfg.user or cfg.password:
        opts["user"], opts["password"] = cfg.user, cfg.password
    if cfg.nkey_file is not None:
        opts["nkeys_seed"] = str(absolute(cfg.nkey_file))
    if cfg.tls_ca is not None or cfg.tls_cert is not None:
        import ssl

        context = ssl.create_default_context(
            cafile=str(absolute(cfg.tls_ca)) if cfg.tls_ca else None)
        if cfg.tls_cert is not None:
            context.load_cert_chain(str(absolute(cfg.tls_cert)), str(absolute(cfg.tls_key)))
        opts["tls"] = context
    return opts


async def ensure_stream(js, cfg) -> None:
    """The work-queue stream and the workers' durable consumer, created when missing."""
    from nats.js.api import (AckPolicy, ConsumerConfig, RetentionPolicy, StorageType,
                             StreamConfig)
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(cfg.stream)
    except NotFoundError:
        await js.add_stream(StreamConfig(
            name=cfg.stream, subjects=[cfg.subject], retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE, duplicate_window=120.0))
    consumer = ConsumerConfig(
        durable_name=cfg.consumer, ack_policy=AckPolicy.EXPLICIT, ack_wait=cfg.ack_wait_s,
        # One more delivery than attempts: that one puts the input in the failed folder.
        max_deliver=cfg.max_deliver + 1, max_ack_pending=cfg.max_ack_pending,
        filter_subject=cfg.subject)
    try:
        await js.consumer_info(cfg.stream, cfg.consumer)
    except NotFoundError:
        await js.add_consumer(cfg.stream, consumer)


async def read_stats(js, cfg) -> Stats:
    """Queue depth, in flight and redeliveries from the consumer; workers from their heartbeats."""
    info = await js.consumer_info(cfg.stream, cfg.consumer)
    stats = Stats(connected=True, queued=int(info.num_pending or 0),
                  in_flight=int(info.num_ack_pending or 0), redelivered=int(info.num_redelivered or 0))
    try:
        kv = await js.key_value(HEARTBEAT_BUCKET)
        for key in await kv.keys():
            entry = await kv.get(key)
            stats.workers[key] = json.loads(entry.value)
    except Exception:  # noqa: BLE001 - no worker has reported yet (no bucket, no keys)
        pass
    return stats


class Cluster:
    """The service's bridge to NATS (one per process)."""

    def __init__(self, svc) -> None:
        self.svc = svc
        self.cfg = svc.settings.cluster
        self.log = svc.log
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="cluster", daemon=True)
        self.nc = None
        self.js = None
        self.ready = False  # stream and consumer known to exist
        self.held: dict[str, object] = {}  # job id -> its delivered message, jobs running here
        self.stats = Stats()
        self._stop: asyncio.Event | None = None

    # -- lifecycle (service thread)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        import nats

        self._stop = asyncio.Event()
        name = f"anond-{self.svc.store.instance}"
        while not self._stop.is_set():
            try:
                self.nc = await nats.connect(
                    **connect_options(self.cfg, name),
                    disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                    error_cb=self._error)
                break
            except Exception as exc:  # noqa: BLE001 - the server may come later
                self.log.warning("cluster.unavailable", error=type(exc).__name__)
                await self._sleep(2.0)
        if self.nc is None:
            return
        self.js = self.nc.jetstream(timeout=5)
        self.log.info("cluster.connected", role=self.cfg.role)
        tasks = [asyncio.ensure_future(self._keep_stats())]
        if self.cfg.runs_workers:
            tasks += [asyncio.ensure_future(self._pull()), asyncio.ensure_future(self._progress())]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.nc.drain()
        except Exception:  # noqa: BLE001 - closing anyway
            pass

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _disconnected(self) -> None:
        self.stats.connected = False
        self.log.warning("cluster.disconnected")

    async def _error(self, exc: Exception) -> None:
        """The client's errors as one event each (its default prints a traceback)."""
        self.log.debug("cluster.error", error=type(exc).__name__)

    async def _reconnected(self) -> None:
        self.log.info("cluster.reconnected")

    async def _ensure(self) -> bool:
        if not self.ready:
            try:
                await ensure_stream(self.js, self.cfg)
                self.ready = True
            except Exception as exc:  # noqa: BLE001 - server away or JetStream not enabled
                self.log.warning("cluster.stream_unavailable", error=type(exc).__name__)
        return self.ready

    # -- intake: publish claimed jobs (called from the service loop)

    def publish_due(self) -> None:
        """Jobs claimed here and not yet published go to the stream (pending -> published);
        a failed publish leaves the job pending for the next try."""
        if self.js is None:
            return
        svc = self.svc
        jobs = svc.store.take_due(64, set(svc.inboxes))
        for job in jobs:
            inbox = svc.inboxes[job.inbox]
            message = self._message(job, inbox)
            if message is None:
                continue
            asyncio.run_coroutine_threadsafe(self._publish(job, message), self.loop)

    def _message(self, job, inbox) -> bytes | None:
        from .jobrunner import finish_recovered
        from .jobs import Claim
        from .media import kind_of

        claim = Claim(inbox.box.mine / job.id, job.id)
        found = claim.source()
        if found is None:  # finished meanwhile (or a crash between the last steps)
            state = finish_recovered(self.svc.store, inbox, claim)
            self.log.info("job.recovered_finished", job=job.id, state=state)
            return None
        try:
            kind = kind_of(found[1]).kind
            size = found[1].stat().st_size
        except Exception:  # noqa: BLE001 - the worker finds out and quarantines it
            kind, size = "unknown", 0
        return json.dumps({"v": MESSAGE_VERSION, "job": job.id, "inbox": inbox.name,
                           "owner": inbox.box.owner, "kind": kind, "bytes": size}).encode()

    async def _publish(self, job, message: bytes) -> None:
        store = self.svc.store
        try:
            if not await self._ensure():
                raise ConnectionError("stream unavailable")
            await self.js.publish(self.cfg.subject, message, stream=self.cfg.stream,
                                  headers={"Nats-Msg-Id": job.id})
        except Exception as exc:  # noqa: BLE001 - kept pending; published when NATS is back
            store.retry_later(job.id, job.attempts, 1.0, "cluster_unavailable")
            self.log.debug("cluster.publish_failed", job=job.id, error=type(exc).__name__)
            return
        store.finish(job.id, "published")
        self.stats.published += 1
        self.log.info("cluster.published", job=job.id)
        self.svc.wake.set()

    # -- worker: pull, run, settle

    async def _pull(self) -> None:
        psub = None
        while not self._stop.is_set():
            free = self._free_slots()
            if free <= 0 or not await self._ensure():
                await self._sleep(0.1 if free <= 0 else 1.0)
                continue
            try:
                if psub is None:
                    psub = await self.js.pull_subscribe_bind(self.cfg.consumer, self.cfg.stream)
                msgs = await psub.fetch(free, timeout=FETCH_WAIT_S)
            except asyncio.TimeoutError:
                continue
            except Exception as exc:  # noqa: BLE001 - disconnected: the client reconnects
                self.log.debug("cluster.fetch_failed", error=type(exc).__name__)
                await self._sleep(1.0)
                continue
            for msg in msgs:
                await self._take(msg)

    def _free_slots(self) -> int:
        svc = self.svc
        with svc.running_lock:
            return len(svc.workers) - len(svc.running)

    async def _take(self, msg) -> None:
        """Run a delivered job here, or settle it at once when it is not one we can run."""
        from .jobs import CONTROL_DIR, Job

        try:
            body = json.loads(msg.data)
            job_id, inbox_name, owner = body["job"], body["inbox"], body["owner"]
        except (ValueError, KeyError, TypeError):
            self.log.error("cluster.bad_message")
            await msg.term()
            return
        inbox = self.svc.inboxes.get(inbox_name)
        if inbox is None or "/" in owner or "/" in job_id:
            self.log.error("cluster.unknown_inbox", job=job_id)
            await msg.nak(delay=self.cfg.ack_wait_s)  # perhaps a worker that has it
            return
        delivered = int(msg.metadata.num_delivered)
        poison = delivered if delivered > self.cfg.max_deliver else 0
        claim_dir = inbox.root / CONTROL_DIR / "claims" / owner / job_id
        self.held[job_id] = msg
        self.svc.start_cluster_job(Job(job_id, inbox_name, delivered - 1), inbox, claim_dir,
                                   redelivered=delivered > 1, poison=poison)

    async def _progress(self) -> None:
        """In-progress acks for the jobs running here, well inside AckWait."""
        every = max(0.5, self.cfg.ack_wait_s / 3)
        while not self._stop.is_set():
            await self._sleep(every)
            for msg in list(self.held.values()):
                try:
                    await msg.in_progress()
                except Exception:  # noqa: BLE001 - disconnected: redelivery decides
                    pass

    def settle(self, job_id: str) -> None:
        """A worker thread ended this job: ack, nak with the backoff, or leave it to AckWait."""
        msg = self.held.get(job_id)
        if msg is None:
            return
        outcome = self.svc.store.outcome(job_id)
        asyncio.run_coroutine_threadsafe(self._settle(job_id, msg, outcome), self.loop)

    async def _settle(self, job_id: str, msg, outcome) -> None:
        from .jobs import FAILED, PENDING, RUNNING

        store = self.svc.store
        state, next_try, error = outcome if outcome is not None else (None, 0.0, None)
        try:
            if state == PENDING:  # transient failure: the stream retries
                store.forget(job_id)
                await msg.nak(delay=max(0.0, next_try - time.time()))
            elif state == RUNNING:  # requeued at shutdown
                store.forget(job_id)
                await msg.nak()
            else:  # done, failed, skipped, or the claim is gone (finished elsewhere)
                if state == FAILED and error == "max_deliveries":
                    self.stats.quarantined += 1
                await msg.ack()
        except Exception as exc:  # noqa: BLE001 - the stream redelivers; the claim decides then
            self.log.warning("cluster.settle_failed", job=job_id, error=type(exc).__name__)
        finally:
            self.held.pop(job_id, None)

    def release(self) -> None:
        """Shutdown: the jobs still running here go back to the stream at once (nak)."""
        for job_id, msg in list(self.held.items()):
            future = asyncio.run_coroutine_threadsafe(msg.nak(), self.loop)
            try:
                future.result(2.0)
            except Exception:  # noqa: BLE001 - AckWait hands it on anyway
                pass
            self.held.pop(job_id, None)

    # -- the stream's view

    async def _keep_stats(self) -> None:
        instance = self.svc.store.instance
        while not self._stop.is_set():
            if await self._ensure():
                try:
                    fresh = await read_stats(self.js, self.cfg)
                    fresh.published, fresh.quarantined = self.stats.published, self.stats.quarantined
                    self.stats = fresh
                    if self.cfg.runs_workers:
                        kv = await self._heartbeats()
                        await kv.put(instance, json.dumps({
                            "role": self.cfg.role, "in_flight": len(self.held),
                            "slots": len(self.svc.workers), "max_deliveries": self.stats.quarantined,
                            "at": round(time.time())}).encode())
                except Exception as exc:  # noqa: BLE001
                    self.stats.connected = False
                    self.log.debug("cluster.stats_failed", error=type(exc).__name__)
                if self.svc.metrics:
                    self.svc.metrics.set_cluster(self.stats)
            await self._sleep(STATS_EVERY_S)

    async def _heartbeats(self):
        from nats.js.errors import BucketNotFoundError

        try:
            return await self.js.key_value(HEARTBEAT_BUCKET)
        except BucketNotFoundError:
            return await self.js.create_key_value(bucket=HEARTBEAT_BUCKET, ttl=60)


def status(settings) -> dict:
    """The cluster's view for `anond status` (counts and instance ids only)."""
    import nats

    async def run() -> dict:
        nc = await nats.connect(**{**connect_options(settings.cluster, "anond-status"),
                                   "max_reconnect_attempts": 0, "allow_reconnect": False})
        try:
            stats = await read_stats(nc.jetstream(timeout=5), settings.cluster)
        finally:
            await nc.close()
        return {"queued": stats.queued, "in_flight": stats.in_flight,
                "redelivered": stats.redelivered, "workers": stats.workers}

    return asyncio.run(run())


def stream_messages(settings) -> list[bytes]:
    """Every message now in the stream (bench/cluster.py checks them for names and paths)."""
    import nats

    async def run() -> list[bytes]:
        nc = await nats.connect(**connect_options(settings.cluster, "anond-inspect"))
        out = []
        try:
            js = nc.jetstream(timeout=5)
            info = await js.stream_info(settings.cluster.stream)
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    out.append((await js.get_msg(settings.cluster.stream, seq)).data)
                except Exception:  # noqa: BLE001 - acknowledged and removed meanwhile
                    continue
        finally:
            await nc.close()
        return out

    return asyncio.run(run())

